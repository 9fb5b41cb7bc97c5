//! `instances`: how many copies of a unit run, with PM2's `0`/`"max"` (one per CPU) and `-N`
//! (N fewer than the CPUs), and the limit that catches a typo.

use toml::Spanned;

use super::unit_error::{At, UnitError, UnitErrorKind};
use super::values::InstanceCount;

/// A guard against typing `instances = 10000`: every instance is a process.
pub const MAX_INSTANCES: u32 = 4096;
/// Without `instances`: one.
pub(super) const DEFAULT_INSTANCES: u32 = 1;

/// `instances = 0` means one per CPU, like `pm2 start -i 0`.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1)
}

/// The number of instances `instances` asks for, resolved against the CPU count.
pub(super) fn instances(count: Option<&Spanned<InstanceCount>>, at: &At) -> Result<u32, UnitError> {
    Ok(match count.map(|n| (*n.get_ref(), n.span().start)) {
        None => DEFAULT_INSTANCES,
        Some((InstanceCount::Max | InstanceCount::Count(0), _)) => cpu_count(),
        Some((InstanceCount::Count(n), start))
            if n > i64::from(MAX_INSTANCES) || n < -i64::from(MAX_INSTANCES) =>
        {
            return Err(at(
                start,
                UnitErrorKind::BadValue,
                format!("instances = {n} is beyond the limit of {MAX_INSTANCES}"),
            ))
        }
        // -N: N fewer than the CPUs, at least one (PM2's `instances: -1`).
        Some((InstanceCount::Count(n), _)) if n < 0 => {
            let fewer = u32::try_from(n.unsigned_abs()).unwrap_or(MAX_INSTANCES);
            cpu_count().saturating_sub(fewer).max(1)
        }
        Some((InstanceCount::Count(n), _)) => u32::try_from(n).unwrap_or(MAX_INSTANCES),
    })
}
