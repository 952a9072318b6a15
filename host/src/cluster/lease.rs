//! Which replica reports: a `coordination.k8s.io` Lease in the controller's namespace.
//!
//! Every replica serves the webhook and runs promotions (claims on the Promotion
//! resources keep each to one replica). Writing the Pipelines' status and publishing
//! their Events is one replica's job, or each replica would write its own, slightly
//! older, view: the holder of this Lease does it. The holder renews it at every sync;
//! when it stops (killed, partitioned), another replica takes the Lease once it lapses.
//! Taking and renewing are updates carrying the resourceVersion read, so two replicas
//! cannot both take it.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;

/// The Lease's name in the controller's namespace.
pub const LEASE_NAME: &str = "promoter";

/// How long the Lease holds unless renewed: three syncs (at most 5 s apart).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

pub struct Leadership {
    api: Api<Lease>,
    identity: String,
}

impl Leadership {
    pub fn new(client: kube::Client, namespace: &str, identity: &str) -> Leadership {
        Leadership {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
        }
    }

    /// Takes or renews the Lease; whether this replica holds it now.
    pub async fn lead(&self) -> Result<bool, kube::Error> {
        let now = k8s_openapi::jiff::Timestamp::now();
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let lapsed = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(seconds)) => {
                let until = renewed.0.as_millisecond() + i64::from(seconds) * 1000;
                until <= now.as_millisecond()
            }
            _ => true,
        };
        if !mine && !lapsed {
            return Ok(false);
        }
        if !mine {
            tracing::info!(
                previous = spec.holder_identity.as_deref().unwrap_or("none"),
                "taking the lease: this replica reports the Pipelines' status now"
            );
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(LEASE_DURATION.as_secs() as i32);
        spec.renew_time = Some(MicroTime(now));
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // Someone else renewed or took it since it was read.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
