//! The command lines of both binaries as clap definitions. The binaries parse their
//! arguments with them, `clusterctl completions` renders shell completions from them, and the
//! man pages in `packaging/man/` are generated from them (tests/integration/generated_files.rs
//! keeps the files equal to what the definitions render).

pub mod clusterctl_args;
pub mod clusterd_args;
pub mod completion;
pub mod unit_man_page;
