//! Unit files: the raw TOML form ([`UnitFile`]), its typed values, the validated [`Unit`] the
//! supervisor runs, errors that point into the file, and loading a directory of them.

pub mod cron;
mod every_error;
pub mod keys;
mod load;
#[allow(clippy::module_inception)]
mod unit;
mod unit_error;
mod unit_file;
mod values;

pub use every_error::every_error;
pub use keys::{markdown_table, Key, KEYS};
pub use load::{load_unit_file, load_units_dir, read_unit_text, LoadedFile};
pub use unit::{
    cpu_count, is_valid_unit_name, resolve_group, Balance, Credentials, EnvironmentFile,
    ListenAddress, ListenOptions, LogSettings, NodeClusterStop, NodeScheduling, ReadyMode,
    RestartBackoff, RestartLimit, RestartPolicy, Unit, DEFAULT_KILL_TIMEOUT, MAX_INSTANCES,
};
pub use unit_error::{UnitError, UnitErrorKind};
pub use unit_file::UnitFile;
pub use values::{ByteSize, LogTo, SignalName, MAX_DURATION};
