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
//!
//! The holder writes only within [`RENEW_DEADLINE`] of sending its last renewal (client-go's
//! renew deadline): work a slow API server holds up past it is abandoned, so no write of a
//! holder that may have lost the Lease is sent after another replica could have taken it.
//! A replica going away gives the Lease up ([`Leadership::release`], as client-go's
//! ReleaseOnCancel), so another takes it at its next sync rather than after the duration.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use std::time::Duration;

/// The Lease's name in the controller's namespace.
pub const LEASE_NAME: &str = "promoter";

/// How long the Lease holds unless renewed: three syncs (at most 5 s apart).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

/// How long after sending a renewal the holder may go on writing: two thirds of the
/// duration, as client-go's defaults (10 s of 15 s). Another replica takes the Lease no
/// sooner than [`LEASE_DURATION`] after it saw that renewal, which was sent before it saw
/// it: the 5 s between leave room for a write in flight at the deadline.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);

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
        // Released (client-go writes an empty holder; so does `release`).
        let vacant = spec
            .holder_identity
            .as_deref()
            .unwrap_or_default()
            .is_empty();
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
            vacant || since.elapsed() >= duration
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

    /// Gives the Lease up if this replica holds it, as client-go's ReleaseOnCancel does: no
    /// holder, and a duration of one second, so another replica takes it at its next sync
    /// instead of after [`LEASE_DURATION`]. For the shutdown path, once this replica has
    /// stopped writing the Pipelines' status. Whether it was released (false: another
    /// replica holds it, or took it meanwhile).
    pub async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(LEASE_NAME).await? else {
            return Ok(false);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        match self
            .api
            .replace(LEASE_NAME, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!("lease released: another replica reports the Pipelines' status now");
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
