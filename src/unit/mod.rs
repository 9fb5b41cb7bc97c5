//! Unit files: the raw TOML form ([`UnitFile`]), its typed values, the validated [`Unit`] the
//! supervisor runs (one module per section: its type, its defaults and its checks), errors
//! that point into the file, and loading a directory of them.

mod credentials;
pub mod cron;
mod environment;
mod every_error;
mod health;
mod instances;
pub mod job;
pub mod keys;
mod listen;
mod load;
mod log_settings;
mod memory_limit;
pub mod order;
mod readiness;
mod restarts;
pub mod timestamp_format;
#[allow(clippy::module_inception)]
mod unit;
mod unit_error;
mod unit_file;
mod values;
mod watch;

pub use credentials::{resolve_group, Credentials};
pub use environment::EnvironmentFile;
pub use every_error::every_error;
pub use health::{http_target, HealthCheck, HttpTarget, Probe};
pub use instances::{cpu_count, MAX_INSTANCES};
pub use keys::{markdown_table, Key, KEYS};
pub use listen::ListenOptions;
pub use load::{load_unit_file, load_units_dir, read_unit_text, LoadedFile};
pub use log_settings::{LogFileSetting, LogSettings, LogStream};
pub use restarts::{RestartBackoff, RestartLimit};
pub use unit::{
    is_valid_unit_name, Balance, ListenAddress, NodeClusterStop, NodeScheduling, ReadyMode,
    RestartPolicy, SourceText, Unit, DEFAULT_KILL_TIMEOUT,
};
pub use unit_error::{UnitError, UnitErrorKind};
pub use unit_file::UnitFile;
pub use values::{ByteSize, LogTo, SignalName, MAX_DURATION};
