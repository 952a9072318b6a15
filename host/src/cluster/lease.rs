//! Which replica reports: a `coordination.k8s.io` Lease in the controller's namespace.
//!
//! Every replica serves the webhook and runs promotions (claims on the Promotion
//! resources keep each to one replica). Writing the Pipelines' status and publishing
//! their Events is one replica's job, or each replica would write its own, slightly
//! older, view: the holder of this Lease does it. The holder renews it at every sync;
//! when it stops (killed, partitioned), another replica takes the Lease once it has seen
//! no renewal for the Lease's duration — by its own clock, as client-go does, so skew
//! between nodes' clocks does not matter.
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
    /// The Lease's (holder, renewTime) as last read, and when it was first read so.
    observed: std::sync::Mutex<Option<(String, std::time::Instant)>>,
}

impl Leadership {
    pub fn new(client: kube::Client, namespace: &str, identity: &str) -> Leadership {
        Leadership {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            observed: std::sync::Mutex::default(),
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
        let record = format!("{:?} {:?}", spec.holder_identity, spec.renew_time);
        let lapsed = {
            let mut observed = self.observed.lock().unwrap();
            let since = match observed.as_ref() {
                Some((seen, at)) if *seen == record => *at,
                _ => {
                    *observed = Some((record, std::time::Instant::now()));
                    std::time::Instant::now()
                }
            };
            let duration = spec
                .lease_duration_seconds
                .map_or(LEASE_DURATION, |s| Duration::from_secs(s.max(0) as u64));
            spec.holder_identity.is_none() || since.elapsed() >= duration
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
