//! The AWS drivers, on the official SDK:
//!
//! - `sg` — [`AwsSecurityGroup`] (`driver = "aws-sg"`): one ingress rule per
//!   grant source and port in a security group, tagged with the grants it
//!   stands for, revoked by its id.
//! - `instance` — [`AwsInstance`] (`driver = "aws-instance"`): a fresh app
//!   server per grant (or one taken from a warm pool) that DNATs its listen
//!   port to the target for the grant's source only, terminated at the end.
//!
//! What both share: `client` (one SDK client per region and endpoint, with
//! bounded retries and timeouts), `failure` (AWS errors in words, transient
//! or not) and `tags` (the tags that mark what ajar made, read back after a
//! restart). `userdata` renders the app server's boot script; it is pure.

mod client;
mod failure;
mod instance;
mod sg;
pub mod tags;
pub mod userdata;

pub use instance::AwsInstance;
pub use sg::AwsSecurityGroup;
