//! `memory_max`: an instance whose memory (all of its processes) goes above its unit's limit
//! is replaced gracefully — the same handover as a suicide: its replacement starts and becomes
//! ready, then it gets `kill_signal` and `kill_timeout` to finish. A timer checks every
//! `memory_check_interval`, and exists only while a unit with a limit has instances.

use std::time::Instant;

use super::timers::Timer;
use super::unit_runtime::Handover;
use super::Supervisor;
use crate::supervisor::process_control::ProcessControl;

impl<P: ProcessControl> Supervisor<P> {
    /// Arms the unit's memory check, if it has a limit and none is armed.
    pub(super) fn arm_memory_check(&mut self, name: &str, now: Instant) {
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        if rt.unit.memory_max.is_none() || rt.memory_check_armed {
            return;
        }
        rt.memory_check_armed = true;
        let every = rt.unit.memory_check_interval;
        self.timers
            .add_after(now, every, Timer::MemoryCheck(name.to_string()));
    }

    /// Measures the unit's serving instances and replaces those above `memory_max`.
    pub(super) fn check_memory(&mut self, name: &str, now: Instant) {
        let Some(rt) = self.units.get_mut(name) else {
            return;
        };
        rt.memory_check_armed = false;
        let Some(limit) = rt.unit.memory_max else {
            return;
        };
        // Processes already leaving (stopping, replaced) are not measured again, nor is a
        // replacement that is not ready yet: its index already has a process on its way out,
        // so it cannot be replaced before it is ready (it is measured from then on).
        let replacing: Vec<_> = rt
            .slots
            .iter()
            .filter(|slot| slot.standby.is_some())
            .filter_map(|slot| slot.current)
            .collect();
        let serving: Vec<_> = self
            .processes_of(name)
            .filter(|p| !p.phase.is_leaving() && !replacing.contains(&p.id))
            .map(|p| (p.id, p.pid, p.started_at))
            .collect();
        if serving.is_empty() {
            // A replacement that is not ready yet is measured once it is.
            if !replacing.is_empty() {
                self.arm_memory_check(name, now);
            }
            return;
        }
        let usage = self.os.usage(&serving);
        for (id, _, _) in &serving {
            let Some(memory) = usage.get(id).map(|u| u.memory_bytes) else {
                continue;
            };
            if memory <= limit {
                continue;
            }
            let index = self.processes.get(id).map(|p| p.index);
            let why = format!(
                "memory {} above memory_max {}",
                mebibytes(memory),
                mebibytes(limit)
            );
            log::warn!("{name}[{}]: {why}", index.unwrap_or_default());
            // Counted only when a replacement starts: not when the unit is stopping or out
            // of its restart budget.
            if self.hand_over(*id, Handover::Replace, &why, now) {
                if let Some(rt) = self.units.get_mut(name) {
                    rt.memory_replacements += 1;
                }
            }
        }
        self.arm_memory_check(name, now);
    }
}

fn mebibytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}
