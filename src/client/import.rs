//! `clusterctl import`: a PM2 ecosystem file (`ecosystem.config.js`, `.cjs`, `.mjs`, `.json`,
//! `.json5`, `.yml`) becomes one unit file per app, each key mapped to its clusterd
//! counterpart with a comment saying where it came from, and every key that has none listed
//! with the reason ([`super::pm2_keys`] is the table; docs/migrating-from-pm2.md is the same
//! table for people, and a test holds the keys it names to it). The file is
//! hostile input: only JavaScript runs (bounded, as root only when allowed), data is parsed
//! with limits, every unit is escaped completely and read back before it is written, and
//! files are written without following symlinks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::printable::printable;
use crate::unit::is_valid_unit_name;

/// The largest ecosystem file read (PM2's are a few KiB): a bigger one is an error, not a
/// stall or an out-of-memory.
pub const MAX_FILE_SIZE: u64 = 16 << 20;
/// How long node may take to evaluate a JavaScript ecosystem file before it is killed.
pub const NODE_TIMEOUT: Duration = Duration::from_secs(20);
/// The most JSON node may print for an ecosystem file before it is killed.
const NODE_OUTPUT_MAX: u64 = MAX_FILE_SIZE;
/// How much of node's error output an error message shows.
const NODE_STDERR_SHOWN: usize = 4096;
/// Longest unit name made from an app's name, leaving room for a `-N` of a renamed twin
/// within clusterd's 128.
const NAME_MAX: usize = 100;

/// One unit made from one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedUnit {
    /// The unit's name, from the app's `name` (made valid for a file name).
    pub name: String,
    /// The unit file's text.
    pub text: String,
    /// The app's keys that have no counterpart, with why.
    pub not_mapped: Vec<String>,
}

/// Whether a file runs as code: JavaScript does (node evaluates it, as PM2 does); every
/// other file is data and is parsed, never evaluated.
pub fn is_javascript(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("js" | "cjs" | "mjs")
    )
}

/// Reads the ecosystem file. `.js`, `.cjs` and `.mjs` are evaluated by node as the user
/// running clusterctl, with its environment (ecosystem files read `process.env`); as root
/// only with `allow_exec`. `.yml`/`.yaml` are read as PM2's YAML, and every other file
/// (`.json`, `.json5`, anything else) as JSON5: data, never code.
pub fn read_ecosystem(path: &Path, allow_exec: bool) -> Result<Value, String> {
    let shown = path.display();
    if is_javascript(path) {
        if nix::unistd::geteuid().is_root() && !allow_exec {
            return Err(format!(
                "{shown} is JavaScript: importing it runs it with node, as root. Read it, then \
                 pass --allow-exec to run it; or export its apps as JSON \
                 (node -p 'JSON.stringify(require(\"./{}\"))' > ecosystem.json, as an \
                 unprivileged user) and import that, which is only read",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
        }
        // Node exits once the answer is out, even if the file left timers or sockets behind
        // (PM2 evaluates it inside its own long-running process, where they do no harm).
        let script = if path.extension().is_some_and(|e| e == "mjs") {
            "import(require('url').pathToFileURL(process.argv[1]).href).then(m => done(m.default === undefined ? m : m.default))"
        } else {
            "const m = require(process.argv[1]); done(m && m.default ? m.default : m)"
        };
        let output = run_node(path, script)?;
        if output.is_empty() {
            return Err(format!("{shown}: exports nothing"));
        }
        return serde_json::from_slice(&output)
            .map_err(|e| format!("{shown}: not an ecosystem file: {e}"));
    }
    let text = read_capped(path)?;
    if text.trim().is_empty() {
        return Err(format!("{shown}: the file is empty"));
    }
    let yaml = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => true,
        Some("json" | "json5") => false,
        // Neither: JSON5 if it starts as JSON5 does, else YAML (which reads a file that
        // starts with `{` or `[` as JSON5 too).
        _ => !text.trim_start().starts_with('/'),
    };
    let parsed = if yaml {
        super::yaml_subset::parse(&text)
    } else {
        super::json5::parse(&text)
    };
    parsed.map_err(|e| format!("{shown}: {e}"))
}

/// The text of `path`, at most [`MAX_FILE_SIZE`] bytes of UTF-8.
fn read_capped(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(format!(
            "{shown}: larger than {} MiB, which no ecosystem file is",
            MAX_FILE_SIZE >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{shown}: not UTF-8 text"))
}

/// The JSON that `script`, run by node with the file's absolute path, prints. Node runs in a
/// process group of its own with no input; it is killed (with anything it started in its
/// group) after [`NODE_TIMEOUT`] or once it has printed more than [`NODE_OUTPUT_MAX`].
fn run_node(path: &Path, script: &str) -> Result<Vec<u8>, String> {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;

    let shown = path.display();
    let mut child = spawn_node(path, script)?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let receiver = read_pipes(&mut child);
    let mut outputs = NodeOutputs::default();
    let end = wait_bounded(pid, &receiver, &mut outputs);
    let _ = killpg(pid, Signal::SIGKILL);
    let status = child.wait();
    // The pipes close now that the group is gone; a process that left the group and keeps
    // them open is not waited for long.
    outputs.drain(&receiver, Duration::from_secs(2));
    let NodeOutputs { stdout, stderr } = outputs;
    let errors = || node_errors(stderr.as_deref().unwrap_or_default());
    match end {
        End::TimedOut => Err(format!(
            "{shown}: node did not finish evaluating it within {} s, and was killed{}",
            NODE_TIMEOUT.as_secs(),
            errors()
        )),
        End::Flooded => Err(format!(
            "{shown}: node printed more than {} MiB evaluating it, and was killed",
            NODE_OUTPUT_MAX >> 20
        )),
        End::Exited => match (status, stdout) {
            (Ok(status), Some(stdout)) if status.success() => Ok(stdout),
            (Ok(status), _) if !status.success() => Err(format!(
                "node could not evaluate {shown} ({status}){}",
                errors()
            )),
            _ => Err(format!(
                "{shown}: a process that node started keeps node's output open"
            )),
        },
    }
}

/// Node evaluating `script` with the file's absolute path as its argument, in a process
/// group of its own, with no input and both outputs piped.
fn spawn_node(path: &Path, script: &str) -> Result<std::process::Child, String> {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // What the file logs goes to stderr: stdout carries the answer alone. A RegExp (as in
    // `ignore_watch`) would be `{}` in JSON: it is kept as `{"regexp": "/.../"}` to be named.
    let script = format!(
        "console.log = console.info = console.debug = console.error; \
         const done = v => process.stdout.write(JSON.stringify(v, (k, x) => x instanceof RegExp ? {{regexp: String(x)}} : x), () => process.exit(0)); {script}"
    );
    Command::new("node")
        .arg("-e")
        .arg(script)
        .arg(&absolute)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run node to evaluate {}: {e}", path.display()))
}

/// One thread per pipe of `child`, each sending `(true, stdout)` or `(false, stderr)` once
/// its pipe ends: stdout up to one byte past [`NODE_OUTPUT_MAX`], stderr's first
/// [`NODE_STDERR_SHOWN`] bytes.
fn read_pipes(child: &mut std::process::Child) -> mpsc::Receiver<(bool, Vec<u8>)> {
    let (sender, receiver) = mpsc::channel::<(bool, Vec<u8>)>();
    if let Some(pipe) = child.stdout.take() {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.take(NODE_OUTPUT_MAX + 1).read_to_end(&mut bytes);
            let _ = sender.send((true, bytes));
        });
    }
    if let Some(mut pipe) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buffer = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut buffer) {
                let room = NODE_STDERR_SHOWN.saturating_sub(kept.len());
                kept.extend_from_slice(buffer.get(..n.min(room)).unwrap_or_default());
            }
            let _ = sender.send((false, kept));
        });
    }
    receiver
}

/// Node's stdout and stderr, each once its pipe has ended.
#[derive(Default)]
struct NodeOutputs {
    stdout: Option<Vec<u8>>,
    stderr: Option<Vec<u8>>,
}

impl NodeOutputs {
    fn store(&mut self, (is_stdout, bytes): (bool, Vec<u8>)) {
        if is_stdout {
            self.stdout = Some(bytes);
        } else {
            self.stderr = Some(bytes);
        }
    }

    /// Takes what the pipes still send, for at most `wait`.
    fn drain(&mut self, receiver: &mpsc::Receiver<(bool, Vec<u8>)>, wait: Duration) {
        let drained = Instant::now() + wait;
        while self.stdout.is_none() || self.stderr.is_none() {
            let left = drained.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(message) => self.store(message),
                Err(_) => break,
            }
        }
    }
}

/// How node's run ended.
enum End {
    Exited,
    TimedOut,
    Flooded,
}

/// Waits for node to exit, at most [`NODE_TIMEOUT`] and until it has printed more than
/// [`NODE_OUTPUT_MAX`], storing the outputs that end meanwhile. Waits without reaping node,
/// so that its process group stays its own until killed.
fn wait_bounded(
    pid: nix::unistd::Pid,
    receiver: &mpsc::Receiver<(bool, Vec<u8>)>,
    outputs: &mut NodeOutputs,
) -> End {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

    let deadline = Instant::now() + NODE_TIMEOUT;
    loop {
        let flooded = match receiver.recv_timeout(Duration::from_millis(10)) {
            Ok((true, bytes)) => {
                let flooded = bytes.len() as u64 > NODE_OUTPUT_MAX;
                outputs.store((true, bytes));
                flooded
            }
            Ok(other) => {
                outputs.store(other);
                false
            }
            Err(_) => false,
        };
        if flooded {
            return End::Flooded;
        }
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => {}
            _ => return End::Exited,
        }
        if Instant::now() >= deadline {
            return End::TimedOut;
        }
    }
}

/// What node wrote to stderr, shown safely: the start of it, its control characters
/// escaped, one line of the message per line.
fn node_errors(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<String> = text
        .trim()
        .lines()
        .map(|line| printable(line).into_owned())
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!(":\n  {}", lines.join("\n  "))
    }
}

/// The units of every app of `ecosystem` (`{apps: [...]}`, an array of apps, or one app).
/// With `environment`, the app's `env_<environment>` is merged into its `env`, as
/// `pm2 start --env <environment>` does; without, each `env_<name>` becomes an
/// `[environments.<name>]` table for `clusterd --environment <name>`.
/// `base`: the ecosystem file's directory, where PM2 starts an app without a `cwd` (and
/// what a relative `cwd` is relative to).
pub fn import(
    ecosystem: &Value,
    source: &str,
    environment: Option<&str>,
    base: &Path,
) -> Result<Vec<ImportedUnit>, String> {
    // `apps`, or `pm2` in PM2's older files.
    let listed = match ecosystem {
        Value::Object(map) => map.get("apps").or_else(|| map.get("pm2")),
        _ => None,
    };
    let apps: Vec<&Value> = match (listed, ecosystem) {
        (Some(Value::Array(apps)), _) => apps.iter().collect(),
        (Some(app @ Value::Object(_)), _) => vec![app],
        (Some(_), _) => return Err("`apps` is neither a list nor an app".into()),
        (None, Value::Array(apps)) => apps.iter().collect(),
        (None, app @ Value::Object(_)) if app.get("script").or_else(|| app.get("exec")).is_some() => vec![app],
        (None, Value::Object(map)) if map.contains_key("deploy") => {
            return Err(
                "the file holds only `deploy` (the settings of `pm2 deploy`), no apps: nothing to import; import the ecosystem file that the deploy starts"
                    .into(),
            )
        }
        _ => {
            return Err(
                "an ecosystem file holds `apps` (a list of apps), a list of apps or one app with a `script`"
                    .into(),
            )
        }
    };
    let mut names = UniqueNames::default();
    let mut units = Vec::with_capacity(apps.len());
    for (position, app) in apps.into_iter().enumerate() {
        let Value::Object(app) = app else {
            return Err(format!("app {} is not an object", position + 1));
        };
        let draft = import_app(app, environment, base)?;
        // PM2 allows two apps of one name; unit names are file names.
        let name = names.claim(&draft.name);
        let text = draft.render(&name, source)?;
        units.push(ImportedUnit {
            name,
            text,
            not_mapped: draft.not_mapped,
        });
    }
    Ok(units)
}

/// Unit names handed out so far: a name taken again gets the first free `-2`, `-3`, ...
/// Linear in the number of apps: each name remembers where its count stopped.
#[derive(Default)]
struct UniqueNames {
    taken: HashSet<String>,
    next: HashMap<String, usize>,
}

impl UniqueNames {
    fn claim(&mut self, name: &str) -> String {
        if self.taken.insert(name.to_string()) {
            return name.to_string();
        }
        let n = self.next.entry(name.to_string()).or_insert(2);
        loop {
            let candidate = format!("{name}-{n}");
            *n += 1;
            if self.taken.insert(candidate.clone()) {
                return candidate;
            }
        }
    }
}

/// A unit made from one app, before it has its final name: its keys in the order they are
/// written, each with the PM2 key it came from, and its tables of variables.
#[derive(Default)]
pub(super) struct UnitDraft {
    /// The name the app asks for, made valid.
    name: String,
    /// The app's own `name`, when the unit could not take it as it is.
    pm2_name: Option<String>,
    keys: Vec<(String, toml::Value, String)>,
    pub(super) environment: toml::Table,
    pub(super) environments: BTreeMap<String, toml::Table>,
    not_mapped: Vec<String>,
    not_needed: Vec<String>,
}

impl UnitDraft {
    /// A draft named after the app's name, else its script's, else "app": the first that
    /// makes a file name.
    fn named(app: &Map<String, Value>, script: &str) -> UnitDraft {
        let mut t = UnitDraft::default();
        let script_name = Path::new(script)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let pm2_name = app.get("name").and_then(Value::as_str);
        t.name = [pm2_name.unwrap_or_default(), script_name, "app"]
            .into_iter()
            .map(unit_name)
            .find(|n| is_valid_unit_name(n))
            .unwrap_or_else(|| "app".into());
        if let Some(pm2_name) = pm2_name.filter(|n| *n != t.name) {
            t.pm2_name = Some(pm2_name.to_string());
        }
        t
    }

    /// `key = value`, from the PM2 key `from`; a key set already keeps its first value.
    pub(super) fn set(&mut self, key: &str, value: toml::Value, from: &str) {
        if let Some((_, _, first)) = self.keys.iter().find(|(k, _, _)| k == key) {
            let why = format!("`{key}` is set already, from {first}");
            self.skip(from, &why);
            return;
        }
        self.keys.push((key.to_string(), value, from.to_string()));
    }

    /// `table.key = value` (`log.stdout`…), from the PM2 key `from`: the inline table
    /// `table` is made or added to; a key set already keeps its first value.
    pub(super) fn set_in(&mut self, table: &str, key: &str, value: toml::Value, from: &str) {
        let at = match self.keys.iter().position(|(k, _, _)| k == table) {
            Some(at) => at,
            None => {
                let empty = toml::Value::Table(toml::Table::new());
                self.keys.push((table.to_string(), empty, from.to_string()));
                self.keys.len() - 1
            }
        };
        let Some((_, toml::Value::Table(entries), sources)) = self.keys.get_mut(at) else {
            return self.skip(
                from,
                &format!("`{table}` is set already, and not as a table"),
            );
        };
        if entries.contains_key(key) {
            return self.skip(from, &format!("`{table}.{key}` is set already"));
        }
        entries.insert(key.to_string(), value);
        if !sources.split(", ").any(|s| s == from) {
            sources.push_str(", ");
            sources.push_str(from);
        }
    }

    /// Removes `key` if it was set (saying why it is not carried over after all).
    pub(super) fn unset(&mut self, key: &str, why: &str) {
        if let Some(from) = self.remove(key) {
            self.skip(&from, why);
        }
    }

    /// Takes `key` back out because it means nothing in this unit: nothing is lost.
    pub(super) fn unset_needless(&mut self, key: &str, why: &str) {
        if let Some(from) = self.remove(key) {
            self.note(&from, why);
        }
    }

    /// Removes `key`; returns what it came from.
    fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.keys.iter().position(|(k, _, _)| k == key)?;
        Some(self.keys.remove(at).2)
    }

    pub(super) fn skip(&mut self, key: &str, why: &str) {
        self.not_mapped.push(format!("{key}: {why}"));
    }

    /// `key` is not carried over because nothing is lost: clusterd does it anyway, or it is
    /// PM2's own business (its monitoring agent, its versioning).
    pub(super) fn note(&mut self, key: &str, why: &str) {
        self.not_needed.push(format!("{key}: {why}"));
    }

    /// What the unit's text must read back as.
    fn table(&self) -> toml::Table {
        let mut table: toml::Table = self
            .keys
            .iter()
            .map(|(key, value, _)| (key.clone(), value.clone()))
            .collect();
        if !self.environment.is_empty() {
            table.insert(
                "environment".into(),
                toml::Value::Table(self.environment.clone()),
            );
        }
        if !self.environments.is_empty() {
            let environments = self
                .environments
                .iter()
                .map(|(name, vars)| (name.clone(), toml::Value::Table(vars.clone())))
                .collect();
            table.insert("environments".into(), toml::Value::Table(environments));
        }
        table
    }

    /// The unit file's text: every string escaped completely ([`basic_string`]), every
    /// comment kept to its line ([`comment`]). The text is then read back by the TOML parser
    /// and must be exactly [`UnitDraft::table`]: nothing in an app can add, drop or change
    /// a key.
    fn render(&self, name: &str, source: &str) -> Result<String, String> {
        let mut text = format!("# {name}");
        if name != self.name {
            text.push_str(&format!(" (another app is named {})", self.name));
        }
        if let Some(pm2_name) = &self.pm2_name {
            text.push_str(&format!(" (PM2's name: {})", comment(pm2_name)));
        }
        text.push_str(&format!(
            ": imported from {} by clusterctl import.\n",
            comment(source)
        ));
        for (heading, lines) in [
            ("Not carried over", &self.not_mapped),
            ("Not needed under clusterd", &self.not_needed),
        ] {
            if !lines.is_empty() {
                text.push_str(&format!("#\n# {heading}:\n"));
                for line in lines {
                    text.push_str(&format!("#   {}\n", comment(line)));
                }
            }
        }
        text.push('\n');
        for (key, value, from) in &self.keys {
            text.push_str(&format!(
                "{} = {}   # pm2: {}\n",
                toml_key(key),
                toml_value(value),
                comment(from)
            ));
        }
        if !self.environment.is_empty() {
            text.push_str("\n[environment]\n");
            text.push_str(&table_lines(&self.environment));
        }
        for (env_name, vars) in &self.environments {
            text.push_str(&format!(
                "\n# clusterd --environment {}\n[environments.{}]\n",
                comment(env_name),
                toml_key(env_name)
            ));
            text.push_str(&table_lines(vars));
        }
        match toml::from_str::<toml::Table>(&text) {
            Ok(read) if read == self.table() => Ok(text),
            _ => Err(format!(
                "{name}: the unit made of this app does not read back as written (a bug in \
                 clusterctl import): nothing written"
            )),
        }
    }
}

/// Whether `c` is written as an escape, in strings and comments alike: a control character
/// (C0, DEL, C1: TOML allows none but tab in a comment, and a terminal obeys them), U+2028
/// and U+2029 (line breaks to editors though not to TOML), a byte-order mark, or a
/// bidirectional control (which can make text look like other text).
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{61c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// Text for a TOML comment: it stays on its line and shows what it is. TOML ends a comment
/// at a line feed and allows no control character in it but tab (TOML 1.0 and 1.1); every
/// [`hidden`] character but tab is escaped, and a backslash doubled so that no escape can
/// be forged.
fn comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push('\t'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if hidden(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A TOML basic string holding exactly `text`. Complete by construction: TOML's basic
/// string takes every character but `"`, `\` and the controls other than tab as it is, and
/// here `"` and `\` are escaped and every [`hidden`] character (tab too) is an escape (`\n`,
/// `\r`, `\t`, else `\uXXXX`: all of them are below U+10000). So a value can end neither its string nor its line,
/// and shows on a terminal as what it is.
fn basic_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if hidden(c) => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it can be, else a [`basic_string`].
fn toml_key(key: &str) -> String {
    if !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        basic_string(key)
    }
}

/// A value as TOML text. Strings, integers, booleans, arrays and inline tables are all
/// import makes; anything else is left to the toml crate's serializer.
fn toml_value(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => basic_string(s),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(table) => {
            let pairs: Vec<String> = table
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_key(k), toml_value(v)))
                .collect();
            format!("{{ {} }}", pairs.join(", "))
        }
        other => other.to_string(),
    }
}

pub(super) fn toml_string(text: &str) -> toml::Value {
    toml::Value::String(text.to_string())
}

pub(super) fn toml_strings(items: &[String]) -> toml::Value {
    toml::Value::Array(items.iter().map(|s| toml_string(s)).collect())
}

/// `key = value` lines of a table of variables.
fn table_lines(table: &toml::Table) -> String {
    table
        .iter()
        .map(|(key, value)| format!("{} = {}\n", toml_key(key), toml_value(value)))
        .collect()
}

/// The app's `cwd`, or "" (its scripts are then relative to the ecosystem file's directory).
fn app_dir(app: &Map<String, Value>) -> &str {
    app.get("cwd").and_then(Value::as_str).unwrap_or("")
}

pub(super) fn words(value: &Value) -> Result<Vec<String>, String> {
    match value {
        Value::String(s) => {
            shell_words::split(s).map_err(|_| format!("unterminated quote in {s:?}"))
        }
        Value::Array(items) => Ok(items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()),
        _ => Err("neither a string nor a list".into()),
    }
}

/// A unit name from an app's name: letters, digits, '-', '_', '.' and '@'; the rest '-';
/// no leading dot, at most [`NAME_MAX`] characters. So no name can leave the directory
/// (`..`, `/`) or be a hidden file, and every name is one `is_valid_unit_name` accepts or
/// empty.
fn unit_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    cleaned
        .trim_start_matches('.')
        .chars()
        .take(NAME_MAX)
        .collect()
}

/// The unit of one app: its name and command here, every other key by [`super::pm2_keys`].
fn import_app(
    app: &Map<String, Value>,
    environment: Option<&str>,
    base: &Path,
) -> Result<UnitDraft, String> {
    let script = script_of(app)?;
    let mut t = UnitDraft::named(app, &script);
    let name = shorten(&t.name);
    if script.contains('\0') {
        return Err(format!("{name}: a NUL byte in `script`"));
    }
    let (command, runner) = command_line(app, &script, base, &name, &mut t)?;
    let from = match &runner.how {
        Some(how) => format!("script ({how}), interpreter, args"),
        None => "script, interpreter, args".to_string(),
    };
    t.set("command", toml_strings(&command), &from);
    super::pm2_keys::map_keys(app, &mut t, environment, base, runner);
    Ok(t)
}

/// The app's `script`, which every app has.
/// The app's `script` (or `exec`, PM2's other name for it), which every app has.
fn script_of(app: &Map<String, Value>) -> Result<String, String> {
    match app.get("script").or_else(|| app.get("exec")) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => {
            let name = app.get("name").map(|n| n.to_string()).unwrap_or_default();
            // Keys authors write for the script that PM2 does not read (it refuses the app).
            let guess = ["cmd", "command", "file", "main"]
                .into_iter()
                .find(|k| app.get(*k).is_some_and(Value::is_string))
                .map(|k| {
                    format!(
                        " (`{k}` is not a key PM2 reads: PM2 refuses this app too; write `script`)"
                    )
                })
                .unwrap_or_default();
            Err(format!(
                "an app without a `script`{}{guess}",
                if name.is_empty() {
                    String::new()
                } else {
                    format!(": {}", shorten(&name))
                }
            ))
        }
    }
}

/// The command: interpreter, its arguments, the script (itself maybe a command line), the
/// script's arguments; and how PM2 runs the script ([`super::pm2_runner`]). `name` is the
/// unit's, for messages; interpreter arguments of a script run without an interpreter are
/// listed in `t` as not carried over.
fn command_line(
    app: &Map<String, Value>,
    script: &str,
    base: &Path,
    name: &str,
    t: &mut UnitDraft,
) -> Result<(Vec<String>, super::pm2_runner::Runner), String> {
    let interpreter = app
        .get("interpreter")
        .or_else(|| app.get("exec_interpreter"))
        .and_then(Value::as_str);
    let dir = base.join(app_dir(app));
    let mut runner = super::pm2_runner::runner(&dir, script, interpreter);
    if let (Err(why), true) = (
        &mut runner.node,
        super::pm2_runner::is_package_manager(script),
    ) {
        // `npm start`: what package.json's script runs is what to write instead.
        let args = match app.get("args") {
            Some(args) => words(args).unwrap_or_default(),
            None => Vec::new(),
        };
        let words: Vec<String> = shell_words::split(script)
            .unwrap_or_default()
            .into_iter()
            .skip(1)
            .chain(args)
            .collect();
        if let Some(hint) = super::pm2_runner::package_script(&dir, &words) {
            why.push_str(&hint);
        }
    }
    let mut command = Vec::new();
    if let Some(interpreter) = &runner.interpreter {
        command.push(interpreter.clone());
        for key in ["interpreter_args", "interpreterArgs", "node_args"] {
            if let Some(args) = app.get(key) {
                command.extend(words(args).map_err(|e| format!("{name}: {key}: {e}"))?);
            }
        }
        command.push(script.to_string());
    } else {
        command.extend(
            shell_words::split(script)
                .map_err(|_| format!("{name}: script: unterminated quote"))?,
        );
        for key in ["interpreter_args", "interpreterArgs", "node_args"] {
            let given = app
                .get(key)
                .is_some_and(|args| !words(args).unwrap_or_default().is_empty());
            if given && super::pm2_runner::is_package_manager(script) {
                t.note(
                    key,
                    "PM2 gives them to the node that runs the package manager, not to the server it starts: nothing of the server's is lost (NODE_OPTIONS in [environment] reaches the server)",
                );
            } else if given {
                t.skip(
                    key,
                    "the script runs without an interpreter here (it is its own program), so there is no interpreter to give them to; put them into `command` by hand (e.g. NODE_OPTIONS in [environment] for a Node program)",
                );
            }
        }
    }
    if let Some(args) = app.get("args") {
        command.extend(words(args).map_err(|e| format!("{name}: args: {e}"))?);
    }
    if command.iter().any(|word| word.contains('\0')) {
        return Err(format!("{name}: a NUL byte in the command"));
    }
    Ok((command, runner))
}

/// At most 200 characters of `text`, for a message.
fn shorten(text: &str) -> String {
    let mut short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    short
}

/// Writes each unit as `DIR/NAME.toml`, never through a symlink and never over a file
/// unless `force`: each is written to a new temporary file in DIR (`O_EXCL`, `O_NOFOLLOW`)
/// and renamed onto its name, which replaces a symlink there rather than the file it points
/// to, and without `force` fails if anything at all (a dangling symlink too) has that name.
/// Without `force`, nothing is written if any name is taken. Returns the paths written.
pub fn write_units(
    dir: &Path,
    units: &[ImportedUnit],
    force: bool,
) -> Result<Vec<std::path::PathBuf>, String> {
    use nix::fcntl::{open, OFlag};
    use nix::sys::stat::{fstatat, Mode};

    let shown = dir.display();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {shown}: {e}"))?;
    let dirfd = open(
        dir,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot open {shown}: {e}"))?;
    if !force {
        for unit in units {
            let name = file_name(unit)?;
            if fstatat(
                &dirfd,
                name.as_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok()
            {
                return Err(format!(
                    "{} exists; nothing written (--force overwrites)",
                    dir.join(&name).display()
                ));
            }
        }
    }
    let mut written = Vec::with_capacity(units.len());
    for unit in units {
        written.push(write_unit(&dirfd, dir, unit, force)?);
    }
    Ok(written)
}

/// The file name of `unit`. Unit names are made by `unit_name`: checked again, as they
/// become file names.
fn file_name(unit: &ImportedUnit) -> Result<String, String> {
    if is_valid_unit_name(&unit.name) {
        Ok(format!("{}.toml", unit.name))
    } else {
        Err(format!("{:?}: not a unit name; nothing written", unit.name))
    }
}

/// Writes `unit` into the directory `dirfd` (`dir`) as [`write_units`] says: a new
/// temporary file renamed onto its name, over what is there only with `force`; the
/// temporary file is removed if that fails. Returns the path written.
fn write_unit(
    dirfd: &std::os::fd::OwnedFd,
    dir: &Path,
    unit: &ImportedUnit,
    force: bool,
) -> Result<std::path::PathBuf, String> {
    use nix::fcntl::{openat, renameat, renameat2, OFlag, RenameFlags};
    use nix::sys::stat::Mode;
    use nix::unistd::{unlinkat, UnlinkatFlags};

    let name = file_name(unit)?;
    let path = dir.join(&name);
    let temporary = format!(".{name}.import-{}", std::process::id());
    let file = openat(
        dirfd,
        temporary.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| format!("cannot create {}: {e}", dir.join(&temporary).display()))?;
    let mut file = std::fs::File::from(file);
    let renamed = std::io::Write::write_all(&mut file, unit.text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
        .and_then(|()| {
            let result = if force {
                renameat(dirfd, temporary.as_str(), dirfd, name.as_str())
            } else {
                renameat2(
                    dirfd,
                    temporary.as_str(),
                    dirfd,
                    name.as_str(),
                    RenameFlags::RENAME_NOREPLACE,
                )
            };
            result.map_err(|e| match e {
                nix::errno::Errno::EEXIST => {
                    format!("{} exists (it appeared meanwhile)", path.display())
                }
                e => format!("cannot write {}: {e}", path.display()),
            })
        });
    if let Err(e) = renamed {
        let _ = unlinkat(dirfd, temporary.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unit_of(app: Value) -> ImportedUnit {
        let units = import(
            &json!({ "apps": [app] }),
            "ecosystem.config.js",
            None,
            Path::new("/srv"),
        )
        .expect("imports");
        units.into_iter().next().expect("one unit")
    }

    fn parses(unit: &ImportedUnit) -> crate::unit::Unit {
        let path = std::path::PathBuf::from(format!("/etc/clusterd/{}.toml", unit.name));
        crate::unit::Unit::parse(&path, &unit.text).unwrap_or_else(|e| panic!("{e}\n{}", unit.text))
    }

    /// Every character of the Basic Multilingual Plane (where every hidden one is) and some
    /// beyond it, in a string, a key and a comment: the string and the key read back as
    /// exactly the text, the comment stays one line and adds nothing.
    #[test]
    fn every_character_is_escaped_completely_in_strings_keys_and_comments() {
        let all: String = (0..=0xffff)
            .chain(0x1_0000..0x1_0400)
            .chain(0x10_fc00..=0x10_ffff)
            .filter_map(char::from_u32)
            .collect();
        let text = format!(
            "# {}\n{} = {}   # {}\n",
            comment(&all),
            toml_key(&all),
            basic_string(&all),
            comment(&all)
        );
        let table: toml::Table = toml::from_str(&text).expect("reads back");
        assert_eq!(table.len(), 1);
        assert_eq!(table.get(&all), Some(&toml::Value::String(all.clone())));
        assert_eq!(text.lines().count(), 2);
        assert!(!text.chars().any(|c| hidden(c) && c != '\n' && c != '\t'));
    }

    #[test]
    fn twins_get_the_first_free_number_in_linear_time() {
        let mut names = UniqueNames::default();
        let got: Vec<String> = ["a", "a-2", "a", "a", "a-3", "b", "a-2"]
            .iter()
            .map(|n| names.claim(n))
            .collect();
        assert_eq!(got, ["a", "a-2", "a-3", "a-4", "a-3-2", "b", "a-2-2"]);
        assert_eq!(unit_name("../../etc/x"), "-..-etc-x");
        assert_eq!(unit_name("..."), "");
        assert_eq!(unit_name(&"é".repeat(300)).len(), NAME_MAX);
    }

    #[test]
    fn a_cluster_mode_node_app_becomes_a_node_cluster_unit_with_pm2s_stop() {
        let unit = unit_of(json!({
            "name": "api", "script": "server.js", "cwd": "/srv/api", "instances": "max",
            "exec_mode": "cluster", "node_args": "--max-old-space-size=512",
            "env": {"NODE_ENV": "development", "PORT": 3000},
            "env_production": {"NODE_ENV": "production"},
            "max_memory_restart": "300M", "wait_ready": true, "listen_timeout": 10000,
            "exp_backoff_restart_delay": 100, "watch": ["src"], "ignore_watch": ["node_modules", "^logs/"],
            "watch_options": {"depth": 3}, "log_date_format": "YYYY"
        }));
        assert_eq!(unit.name, "api");
        let parsed = parses(&unit);
        assert_eq!(
            parsed.command,
            ["node", "--max-old-space-size=512", "server.js"]
        );
        assert!(parsed.node_cluster.is_some());
        assert_eq!(parsed.instances, crate::unit::cpu_count());
        assert_eq!(parsed.memory_max, Some(300 << 20));
        assert_eq!(parsed.ready, crate::unit::ReadyMode::Notify);
        assert_eq!(parsed.ready_timeout, std::time::Duration::from_secs(10));
        assert_eq!(parsed.kill_signal, nix::sys::signal::Signal::SIGINT);
        assert_eq!(parsed.kill_timeout, std::time::Duration::from_millis(1600));
        assert_eq!(parsed.environment["PORT"], "3000");
        assert_eq!(parsed.environments["production"]["NODE_ENV"], "production");
        assert_eq!(parsed.watch, [std::path::PathBuf::from("/srv/api/src")]);
        assert_eq!(parsed.watch_ignore, ["node_modules"]);
        assert!(unit
            .not_mapped
            .iter()
            .any(|l| l.starts_with("ignore_watch:") && l.contains("^logs/")));
        assert!(unit
            .not_mapped
            .iter()
            .any(|l| l.starts_with("watch_options.depth:")));
        assert_eq!(
            parsed.log.timestamp_format.as_ref().map(|f| f.as_str()),
            Some("%Y")
        );
        assert!(unit.text.contains("# pm2: max_memory_restart"));
    }

    #[test]
    fn the_chosen_environment_is_merged_and_other_programs_get_their_interpreter() {
        let units = import(
            &json!([
                {"name": "worker", "script": "worker.py", "env": {"A": "1"}, "env_production": {"A": "2"}},
                {"name": "bin", "script": "./server --port 80", "autorestart": false, "kill_timeout": 5000},
            ]),
            "ecosystem.json",
            Some("production"),
            Path::new("/srv"),
        )
        .expect("imports");
        let worker = parses(&units[0]);
        assert_eq!(worker.command, ["python3", "worker.py"]);
        assert_eq!(worker.environment["A"], "2");
        let bin = parses(&units[1]);
        assert_eq!(bin.command, ["./server", "--port", "80"]);
        assert_eq!(bin.restart, crate::unit::RestartPolicy::Never);
        assert_eq!(bin.kill_timeout, std::time::Duration::from_secs(5));
    }

    /// PM2's other names for keys (lib/API/schema.json's aliases) map as the keys do, and
    /// flags at the value where nothing is lost are noted, not listed as lost.
    #[test]
    fn pm2s_aliases_map_and_harmless_flag_values_are_only_noted() {
        let unit = unit_of(json!({
            "exec": "server.js", "out": "out.log", "err_log": "err.log", "cron": "0 3 * * *",
            "interpreterArgs": "--inspect", "autostart": true, "treekill": true,
            "filter_env": false, "log_date_format": false, "stop_exit_codes": "3"
        }));
        let parsed = parses(&unit);
        assert_eq!(parsed.command, ["node", "--inspect", "server.js"]);
        assert_eq!(parsed.restart_prevent_exit_codes, [3]);
        assert!(parsed.cron_restart.is_some());
        assert!(unit.not_mapped.is_empty(), "{:?}", unit.not_mapped);
        assert!(
            unit.text.contains("stdout = \"/srv/out.log\""),
            "{}",
            unit.text
        );
        assert!(
            unit.text.contains("stderr = \"/srv/err.log\""),
            "{}",
            unit.text
        );
        let lost = unit_of(json!({
            "script": "a.js", "autostart": false, "treekill": false, "log_type": "json",
            "disable_logs": true, "stop_exit_codes": [300]
        }));
        for key in ["autostart", "treekill", "log_type", "stop_exit_codes"] {
            assert!(
                lost.not_mapped
                    .iter()
                    .any(|l| l.starts_with(&format!("{key}:"))),
                "{key}: {:?}",
                lost.not_mapped
            );
        }
        assert!(
            lost.text.contains("stdout = \"/dev/null\""),
            "{}",
            lost.text
        );
        parses(&lost);
        // A cron job restarts nothing: its stop_exit_codes lose nothing.
        let job = unit_of(json!({
            "script": "job.js", "cron_restart": "0 3 * * *", "autorestart": false,
            "stop_exit_codes": [0]
        }));
        assert!(job.not_mapped.is_empty(), "{:?}", job.not_mapped);
        assert!(parses(&job).job.is_oneshot());
    }

    #[test]
    fn what_cannot_be_carried_over_is_said_and_mistakes_are_errors() {
        let unit = unit_of(
            json!({"script": "app.rb", "exec_mode": "cluster", "cron_restart": "*/30 * * * * *"}),
        );
        assert_eq!(unit.name, "app");
        assert!(unit
            .not_mapped
            .iter()
            .any(|l| l.contains("`ruby` is not node")));
        assert!(unit.not_mapped.iter().any(|l| l.contains("to the minute")));
        parses(&unit);
        assert!(import(
            &json!({"apps": [{"name": "x"}]}),
            "e.json",
            None,
            Path::new("/")
        )
        .is_err());
        let twins = import(
            &json!({"apps": [{"name": "a", "script": "a.js"}, {"name": "a", "script": "b.js"}]}),
            "e.json",
            None,
            Path::new("/"),
        )
        .expect("imports");
        assert_eq!(twins[1].name, "a-2");
        assert!(import(
            &json!({"static": [{"path": "."}]}),
            "e.json",
            None,
            Path::new("/")
        )
        .is_err());
    }
}
