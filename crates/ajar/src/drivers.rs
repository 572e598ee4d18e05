//! The drivers this binary runs, one per kind: the one place that names
//! each concrete driver. `ajar server` hands them to the core, and `ajar
//! server --cleanup` asks each to remove what it installed.

use std::collections::BTreeMap;
use std::sync::Arc;

use ajar_domain::DriverKind;
use ajar_driver_aws::{AwsInstance, AwsSecurityGroup};
use ajar_driver_gateway::{ConnectionEvent, Gateway};
use ajar_driver_iptables::Iptables;
use ajar_driver_nftables::Nftables;
use ajar_enforce::clock::Clock;
use ajar_enforce::Driver;
use tokio::sync::mpsc::UnboundedSender;

/// Every driver, reading the time from `clock` (the core's own). The
/// gateway reports its connections on `events`. Building them touches
/// nothing: the kernel DNAT drivers reach the kernel, and the AWS drivers
/// AWS, only once a target uses them (at start or on a reload, which then
/// runs their checks), so a server without such targets needs neither
/// their tools, CAP_NET_ADMIN nor AWS credentials.
pub fn all(events: UnboundedSender<ConnectionEvent>, clock: Arc<dyn Clock>) -> BTreeMap<DriverKind, Arc<dyn Driver>> {
    let drivers: [(DriverKind, Arc<dyn Driver>); 5] = [
        (DriverKind::Gateway, Arc::new(Gateway::new(events, clock.clone()))),
        (DriverKind::Nftables, Arc::new(Nftables::new(clock.clone()))),
        (DriverKind::Iptables, Arc::new(Iptables::new(clock.clone()))),
        (DriverKind::AwsSg, Arc::new(AwsSecurityGroup::new())),
        (DriverKind::AwsInstance, Arc::new(AwsInstance::new(clock))),
    ];
    BTreeMap::from(drivers)
}
