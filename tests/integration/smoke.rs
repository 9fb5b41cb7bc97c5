//! The first thing that must work: a unit runs, and clusterd stops it and exits 0 on SIGTERM.

use crate::common;
use common::*;

#[test]
fn a_unit_runs_and_clusterd_exits_zero_on_sigterm() {
    let mut d = Daemon::start(&[("ticker", "command = [\"sleep\", \"300\"]\ninstances = 2\n")]);
    let pids = d.wait_running("ticker", 2);
    assert_eq!(d.terminate().code(), Some(0));
    for pid in pids {
        wait_for("instance gone", PATIENCE, || !alive(pid));
    }
}
