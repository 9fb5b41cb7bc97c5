//! clusterctl's side of the control protocol: [`connection`] sends one request and reads one
//! answer over a [`transport`] (the local socket, or ssh to another host, whose end is
//! [`dial_stdio`]); [`status_table`] renders a status report for people; [`top`] is the live
//! view.

pub mod all_logs;
pub mod connection;
pub mod dial_stdio;
pub mod fleet;
pub mod import;
pub mod json5;
mod pm2_keys;
mod pm2_runner;
pub mod readiness;
pub mod status_table;
pub mod stop_order;
pub mod top;
pub mod transport;
pub mod yaml_subset;
