//! The supervisor's side of `watchdog` and `[health]`, with the fake OS and a fake clock.

use super::*;
use crate::protocol::HealthState;

const WATCHDOG_UNIT: &str = "command = [\"app\"]\nready = \"notify\"\nwatchdog = \"10s\"\n";

fn alive() -> NotifyMessage {
    NotifyMessage {
        watchdog: true,
        ..NotifyMessage::default()
    }
}

fn health_of(h: &Harness, pid: Pid) -> Option<crate::protocol::HealthStatus> {
    h.status("web")
        .instances
        .iter()
        .find(|i| i.pid == Some(pid.as_raw() as u32))
        .and_then(|i| i.health.clone())
}

#[test]
fn pings_only_note_the_time_and_a_silent_instance_is_replaced_once_its_replacement_is_ready() {
    let mut h = Harness::start(&[("web", WATCHDOG_UNIT)]);
    let old = h.pid_of("web", 0);
    // Not ready yet: no watchdog, and pings do not count.
    assert_eq!(h.sup.next_deadline(), Some(h.now + Duration::from_secs(30)));
    h.notify(old, old, ready());
    let t0 = h.now;
    assert_eq!(h.sup.next_deadline(), Some(t0 + Duration::from_secs(10)));
    assert_eq!(
        health_of(&h, old).map(|s| s.state),
        Some(HealthState::Unknown)
    );
    h.now += Duration::from_secs(3);
    for _ in 0..1000 {
        h.notify(old, old, alive());
    }
    // A flood of pings moves no timer.
    assert_eq!(h.sup.next_deadline(), Some(t0 + Duration::from_secs(10)));
    assert_eq!(health_of(&h, old).map(|s| s.state), Some(HealthState::Ok));
    // At the deadline, the timer re-arms from the last ping.
    h.advance(Duration::from_secs(7));
    assert_eq!(h.spawn_count(), 1);
    assert_eq!(h.sup.next_deadline(), Some(t0 + Duration::from_secs(13)));
    // Silent since: hung. Its replacement starts; it is not stopped before that is ready.
    h.advance(Duration::from_secs(3));
    assert_eq!(h.spawn_count(), 2);
    let new = h.last_pid();
    assert!(h.signals_to(old).is_empty(), "{:?}", h.signals_to(old));
    assert_eq!(h.os().withdrawn.len(), 1);
    let health = health_of(&h, old).expect("health of the hung one");
    assert_eq!(health.state, HealthState::Failing);
    assert!(
        health
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("no sign of life"),
        "{health:?}"
    );
    assert_eq!(h.status("web").health_replacements, 1);
    h.notify(new, new, ready());
    assert_eq!(h.signals_to(old), vec![Signal::SIGTERM, Signal::SIGCONT]);
    assert_eq!(h.current_pids("web"), vec![Some(new)]);
}

#[test]
fn a_ping_from_another_instance_counts_for_its_sender_only() {
    let text = format!("{WATCHDOG_UNIT}instances = 2\n");
    let mut h = Harness::start(&[("web", &text)]);
    let (a, b) = (h.pid_of("web", 0), h.pid_of("web", 1));
    h.notify(a, a, ready());
    h.notify(b, b, ready());
    for _ in 0..5 {
        h.advance(Duration::from_secs(4));
        // b pings, also from a process that claims a's group but is in b's: attributed by
        // its pid first.
        h.notify(b, b, alive());
    }
    let pids = h.current_pids("web");
    assert_ne!(pids[0], Some(a), "a never pinged: replaced");
    assert_eq!(pids[1], Some(b));
}

#[test]
fn a_hung_instance_counts_against_the_restart_limit_and_the_unit_gives_up() {
    let text = "command = [\"app\"]\nwatchdog = \"1s\"\nrestart_limit = { burst = 2, interval = \"60s\" }\n";
    let mut h = Harness::start(&[("web", text)]);
    for _ in 0..10 {
        h.advance(Duration::from_millis(1100));
    }
    let status = h.status("web");
    assert!(status.gave_up, "{status:?}");
    assert_eq!(status.health_replacements, 2);
    assert_eq!(h.spawn_count(), 3);
}

const HTTP_UNIT: &str = "command = [\"app\"]\n[health]\nhttp = \"http://127.0.0.1:8080/\"\ninterval = \"1s\"\ntimeout = \"2s\"\nfailures = 2\n";

#[test]
fn one_check_runs_at_a_time_and_a_late_answer_is_ignored() {
    let mut h = Harness::start(&[("web", HTTP_UNIT)]);
    let pid = h.pid_of("web", 0);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.os().probes.len(), 1);
    let (id, first) = h.os().probes[0];
    // Unanswered: no second check meanwhile; failed at its timeout (and a grace).
    h.advance(Duration::from_millis(2900));
    assert_eq!(h.os().probes.len(), 1);
    h.advance(Duration::from_millis(200));
    assert_eq!(health_of(&h, pid).map(|s| s.failures), Some(1));
    // Its late answer changes nothing.
    h.handle(Event::ProbeDone {
        id,
        seq: first,
        result: Ok(()),
    });
    assert_eq!(health_of(&h, pid).map(|s| s.failures), Some(1));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.os().probes.len(), 2);
    let second = h.os().probes[1].1;
    h.handle(Event::ProbeDone {
        id,
        seq: second,
        result: Err("HTTP status 500".into()),
    });
    assert_eq!(h.spawn_count(), 2, "replaced after 2 failures in a row");
    assert_eq!(h.status("web").health_replacements, 1);
}

#[test]
fn a_passing_check_resets_the_count_and_failures_within_start_period_do_not_count() {
    let text = "command = [\"app\"]\n[health]\ncommand = [\"check\"]\ninterval = \"1s\"\nfailures = 2\nstart_period = \"5s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pid = h.pid_of("web", 0);
    let check = |h: &mut Harness, status: ExitStatus| {
        h.advance(Duration::from_secs(1));
        let probe = Pid::from_raw(h.os().next_pid - 1);
        h.exit(probe, status);
    };
    for _ in 0..4 {
        check(&mut h, code(1)); // within start_period
    }
    assert_eq!(health_of(&h, pid).map(|s| s.failures), Some(0));
    check(&mut h, code(1));
    check(&mut h, code(0));
    assert_eq!(health_of(&h, pid).map(|s| s.state), Some(HealthState::Ok));
    check(&mut h, code(1));
    assert_eq!(h.spawn_count(), 1);
    check(&mut h, code(1));
    assert_eq!(h.spawn_count(), 2, "two failures in a row");
}

#[test]
fn units_without_watchdog_or_health_have_no_timer_and_no_health_status() {
    let mut h = Harness::start(&[("web", "command = [\"app\"]\n")]);
    assert_eq!(h.sup.next_deadline(), None);
    let pid = h.pid_of("web", 0);
    h.notify(pid, pid, alive());
    assert_eq!(h.sup.next_deadline(), None);
    assert_eq!(health_of(&h, pid), None);
}

#[test]
fn instances_pinging_on_their_own_schedules_share_about_two_wake_ups_per_watchdog() {
    let text = "command = [\"app\"]\ninstances = 50\nwatchdog = \"10s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let t0 = h.now;
    let end = t0 + Duration::from_secs(60);
    // Each pings every 5 s (half its watchdog, as sd_notify libraries do), 100 ms apart.
    let mut pings: Vec<(Instant, Pid)> = (0..50)
        .map(|i| {
            (
                t0 + Duration::from_millis(100 * i as u64),
                h.pid_of("web", i),
            )
        })
        .collect();
    let mut wake_ups = 0;
    loop {
        let (at, pid) = *pings.iter().min().expect("pings");
        let deadline = h.sup.next_deadline().expect("watchdogs armed");
        if deadline <= at {
            if deadline > end {
                break;
            }
            h.now = deadline;
            h.sup.fire_due_timers(h.now);
            wake_ups += 1;
        } else {
            h.now = at;
            h.notify(pid, pid, alive());
            for ping in pings.iter_mut().filter(|p| p.1 == pid) {
                ping.0 = at + Duration::from_secs(5);
            }
        }
    }
    assert_eq!(h.spawn_count(), 50, "nobody was found hung");
    eprintln!("{wake_ups} wake-ups in 60 s for 50 instances");
    assert!(
        wake_ups <= 14,
        "{wake_ups} wake-ups in 60 s for 50 instances"
    );
}

#[test]
fn a_check_still_running_when_its_instance_exits_is_killed() {
    let text = "command = [\"app\"]\n[health]\ncommand = [\"check\"]\ninterval = \"1s\"\ntimeout = \"30s\"\n";
    let mut h = Harness::start(&[("web", text)]);
    let pid = h.pid_of("web", 0);
    h.advance(Duration::from_secs(1));
    let probe = Pid::from_raw(h.os().next_pid - 1);
    h.exit(pid, code(1));
    assert_eq!(h.signals_to(probe), vec![Signal::SIGKILL]);
    // Reaped like any child; the restarted instance's checks go on.
    h.exit(probe, killed(Signal::SIGKILL));
    h.advance(Duration::from_secs(1));
    assert_eq!(h.os().probes.len(), 2);
}
