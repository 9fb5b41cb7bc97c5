//! clusterctl's side of the control protocol: [`connection`] sends one request and reads one
//! answer; [`status_table`] renders a status report for people; [`top`] is the live view.

pub mod connection;
pub mod import;
pub mod json5;
mod pm2_keys;
mod pm2_runner;
pub mod readiness;
pub mod status_table;
pub mod stop_order;
pub mod top;
pub mod yaml_subset;
