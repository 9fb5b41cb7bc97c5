//! The messages of Node's cluster protocol (`lib/internal/cluster/{child,primary,utils}.js`,
//! `lib/internal/child_process.js`), as clusterd reads and writes them.
//!
//! A message whose `cmd` starts with `NODE_` is internal to Node: the worker's user code never
//! sees it, and clusterd never hands it to the supervisor as a user message. Cluster messages
//! are `{"cmd":"NODE_CLUSTER", ..., "seq":N}`; a reply carries `"ack": <seq of the request>`.
//! A message that carries a socket is wrapped as
//! `{"cmd":"NODE_HANDLE","type":"net.Native","msg":{...}}` and written with the fd as
//! SCM_RIGHTS. Every line clusterd writes is produced by `serde_json`, so it is always valid
//! JSON: a malformed line would crash the worker.

use serde_json::{json, Map, Value};

/// What a Node worker sent on its channel, when it is one of Node's internal messages.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FromWorker {
    /// `{act:'online'}`, sent before any user code runs.
    Online,
    /// `{act:'queryServer', ...}`: the worker calls `listen()`/`bind()`; a reply is due.
    QueryServer(Box<ServerQuery>),
    /// `{act:'listening', ...}`: the worker's server emitted `'listening'`.
    Listening,
    /// `{act:'close', key}`: the worker closed the server of `key`.
    Close { key: String },
    /// `{act:'exitedAfterDisconnect'}`: the worker leaves on its own (`worker.disconnect()`
    /// or `destroy()`); it waits for the ack before it disconnects.
    ExitedAfterDisconnect { seq: Value },
    /// `{ack:N, accepted}`: the answer to the `newconn` whose seq was N.
    ConnectionReply { ack: u64, accepted: bool },
    /// `{cmd:'NODE_HANDLE_ACK'}`: the socket clusterd sent arrived.
    HandleAck,
    /// `{cmd:'NODE_HANDLE_NACK'}`: the message arrived without its socket.
    HandleNack,
    /// `{cmd:'NODE_HANDLE'}`: the worker sent clusterd a handle (user code did
    /// `process.send(msg, socket)`); it waits for an ack before it sends anything else.
    HandleSent,
    /// Any other internal message (for the log).
    Other(String),
}

/// The fields of a `queryServer` that matter to the primary. Missing fields are kept as
/// `None` (JavaScript `undefined`), which differs from `null` in the key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerQuery {
    pub seq: Value,
    pub index: Option<Value>,
    pub address: Option<Value>,
    pub port: Option<Value>,
    pub address_type: Option<Value>,
    pub fd: Option<Value>,
    pub flags: i64,
    pub backlog: i64,
    /// TLS servers put their `ticketKeys` here; the primary echoes one `data` per key.
    pub data: Value,
    pub readable_all: bool,
    pub writable_all: bool,
}

impl ServerQuery {
    /// The primary's key for the handle: `${address}:${port}:${addressType}:${fd}:${index}`
    /// as JavaScript formats it, such as `null:3000:4:undefined:0`.
    pub(crate) fn key(&self) -> String {
        [
            &self.address,
            &self.port,
            &self.address_type,
            &self.fd,
            &self.index,
        ]
        .iter()
        .map(|v| js_string(v.as_ref()))
        .collect::<Vec<_>>()
        .join(":")
    }

    /// The address as a person writes it, for the log: `*:3000` (every address, as Node's
    /// `listen(3000)`), `127.0.0.1:3000`, `[::1]:3000`, `/run/app.sock`, `udp4 *:53`, `fd 5`;
    /// not the key (`null:3000:4:undefined:0`), which is Node's internal name for it.
    pub(crate) fn describe(&self) -> String {
        if let Some(fd) = self.fd_number() {
            return format!("fd {fd}");
        }
        let port = self.port_number().unwrap_or(0);
        let host = match self.address_string() {
            None | Some("") => "*".to_string(),
            Some(a) if a.contains(':') => format!("[{a}]"),
            Some(a) => a.to_string(),
        };
        match (self.udp_type(), self.address_type_number()) {
            (Some(udp), _) => format!("{udp} {host}:{port}"),
            (None, Some(-1)) => self.address_string().unwrap_or("?").to_string(),
            _ => format!("{host}:{port}"),
        }
    }

    /// The port as a number, when it is one (`-1` for Unix sockets).
    pub(crate) fn port_number(&self) -> Option<i64> {
        self.port.as_ref().and_then(Value::as_i64)
    }

    pub(crate) fn address_string(&self) -> Option<&str> {
        self.address.as_ref().and_then(Value::as_str)
    }

    /// `"udp4"`/`"udp6"` for dgram sockets, else `None`.
    pub(crate) fn udp_type(&self) -> Option<&str> {
        self.address_type
            .as_ref()
            .and_then(Value::as_str)
            .filter(|t| *t == "udp4" || *t == "udp6")
    }

    /// 4, 6 or -1 (Unix socket) for net servers.
    pub(crate) fn address_type_number(&self) -> Option<i64> {
        self.address_type.as_ref().and_then(Value::as_i64)
    }

    /// The worker's own fd for `listen({fd})` (UDP sends `-1` for "none").
    pub(crate) fn fd_number(&self) -> Option<i64> {
        self.fd
            .as_ref()
            .and_then(Value::as_i64)
            .filter(|&fd| fd >= 0)
    }
}

/// How JavaScript's template literals print a JSON value (`undefined` when absent).
fn js_string(value: Option<&Value>) -> String {
    match value {
        None => "undefined".to_string(),
        Some(Value::Null) => "null".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => format!("{f:.0}"),
            _ => n.to_string(),
        },
        Some(Value::Array(_)) | Some(Value::Object(_)) => "[object Object]".to_string(),
    }
}

/// Classifies one parsed line. `None` means it is not one of Node's internal messages: it is
/// a user message (`process.send(...)`) for the supervisor.
pub(crate) fn classify(value: &Value) -> Option<FromWorker> {
    let object = value.as_object()?;
    let cmd = object.get("cmd")?.as_str()?;
    if !cmd.starts_with("NODE_") {
        return None;
    }
    Some(match cmd {
        "NODE_HANDLE_ACK" => FromWorker::HandleAck,
        "NODE_HANDLE_NACK" => FromWorker::HandleNack,
        "NODE_HANDLE" => FromWorker::HandleSent,
        "NODE_CLUSTER" => cluster_message(object),
        other => FromWorker::Other(crate::printable::printable(other).into_owned()),
    })
}

fn cluster_message(object: &Map<String, Value>) -> FromWorker {
    if let Some(ack) = object.get("ack").and_then(Value::as_u64) {
        if object.get("act").is_none() {
            let accepted = object
                .get("accepted")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            return FromWorker::ConnectionReply { ack, accepted };
        }
    }
    let seq = object.get("seq").cloned().unwrap_or(Value::Null);
    match object.get("act").and_then(Value::as_str) {
        Some("online") => FromWorker::Online,
        Some("listening") => FromWorker::Listening,
        Some("close") => FromWorker::Close {
            key: object
                .get("key")
                .map(|k| js_string(Some(k)))
                .unwrap_or_default(),
        },
        Some("exitedAfterDisconnect") => FromWorker::ExitedAfterDisconnect { seq },
        Some("queryServer") => {
            let field = |name: &str| object.get(name).cloned();
            let number = |name: &str| object.get(name).and_then(Value::as_i64).unwrap_or(0);
            let flag = |name: &str| object.get(name).and_then(Value::as_bool).unwrap_or(false);
            FromWorker::QueryServer(Box::new(ServerQuery {
                seq,
                index: field("index"),
                address: field("address"),
                port: field("port"),
                address_type: field("addressType"),
                fd: field("fd"),
                flags: number("flags"),
                backlog: number("backlog"),
                data: field("data").unwrap_or(Value::Null),
                readable_all: flag("readableAll"),
                writable_all: flag("writableAll"),
            }))
        }
        Some(other) => FromWorker::Other(format!("NODE_CLUSTER act {other:?}")),
        None => FromWorker::Other("NODE_CLUSTER without act".to_string()),
    }
}

/// The kind of socket a `NODE_HANDLE` carries; the receiver builds its handle from the
/// socket's actual type, this only selects the conversion (`handleConversion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandleType {
    /// A TCP or Unix stream socket (listening or connected).
    Net,
    /// A UDP socket.
    Dgram,
}

impl HandleType {
    fn name(self) -> &'static str {
        match self {
            HandleType::Net => "net.Native",
            HandleType::Dgram => "dgram.Native",
        }
    }
}

/// `{cmd:'NODE_CLUSTER', ...fields, seq}`.
pub(crate) fn cluster(mut fields: Map<String, Value>, seq: u64) -> Value {
    fields.insert("cmd".into(), json!("NODE_CLUSTER"));
    fields.insert("seq".into(), json!(seq));
    Value::Object(fields)
}

/// Wraps a message that travels with a socket.
pub(crate) fn with_handle(message: Value, kind: HandleType) -> Value {
    json!({"cmd": "NODE_HANDLE", "type": kind.name(), "msg": message})
}

/// The answer to a `queryServer`: `{errno, key, ack, data, [sockname]}`.
pub(crate) fn query_reply(
    errno: i32,
    key: &str,
    ack: &Value,
    data: &Value,
    sockname: Option<Value>,
    seq: u64,
) -> Value {
    let mut fields = Map::new();
    fields.insert("errno".into(), json!(errno));
    fields.insert("key".into(), json!(key));
    fields.insert("ack".into(), ack.clone());
    fields.insert("data".into(), data.clone());
    if let Some(sockname) = sockname {
        fields.insert("sockname".into(), sockname);
    }
    cluster(fields, seq)
}

/// `{act:'newconn', key}`, sent with the connection's socket.
pub(crate) fn new_connection(key: &str, seq: u64) -> Value {
    let mut fields = Map::new();
    fields.insert("act".into(), json!("newconn"));
    fields.insert("key".into(), json!(key));
    with_handle(cluster(fields, seq), HandleType::Net)
}

/// `{act:'disconnect'}`: close your servers and leave.
pub(crate) fn disconnect(seq: u64) -> Value {
    let mut fields = Map::new();
    fields.insert("act".into(), json!("disconnect"));
    cluster(fields, seq)
}

/// `{ack:N}`: the answer to `exitedAfterDisconnect`.
pub(crate) fn ack(request_seq: &Value, seq: u64) -> Value {
    let mut fields = Map::new();
    fields.insert("ack".into(), request_seq.clone());
    cluster(fields, seq)
}

/// `{cmd:'NODE_HANDLE_ACK'}`.
pub(crate) fn handle_ack() -> Value {
    json!({"cmd": "NODE_HANDLE_ACK"})
}

/// One line ready for the channel: compact JSON and `\n`. JSON escapes every newline inside
/// strings, so the framing cannot break.
pub(crate) fn to_line(message: &Value) -> Vec<u8> {
    let mut line = message.to_string().into_bytes();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<FromWorker> {
        classify(&serde_json::from_str(line).unwrap())
    }

    #[test]
    fn the_query_of_a_plain_http_server_gives_nodes_key() {
        // Bytes captured from node v20 (`http.createServer().listen(3000)`).
        let Some(FromWorker::QueryServer(q)) = parse(
            r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":null,"port":3000,"addressType":4,"backlog":0,"seq":1}"#,
        ) else {
            panic!("not a queryServer");
        };
        assert_eq!(q.key(), "null:3000:4:undefined:0");
        // The log says what a person expects, not the key.
        assert_eq!(q.describe(), "*:3000");
        assert_eq!(q.seq, json!(1));
        assert_eq!(q.port_number(), Some(3000));
        assert_eq!(q.address_type_number(), Some(4));
        assert_eq!(q.fd_number(), None);
    }

    #[test]
    fn udp_and_unix_queries_keep_their_shapes() {
        let Some(FromWorker::QueryServer(q)) = parse(
            r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":2,"data":null,"address":"0.0.0.0","port":5000,"addressType":"udp4","fd":-1,"flags":4,"seq":3}"#,
        ) else {
            panic!("not a queryServer");
        };
        assert_eq!(q.key(), "0.0.0.0:5000:udp4:-1:2");
        assert_eq!(q.describe(), "udp4 0.0.0.0:5000");
        assert_eq!(q.udp_type(), Some("udp4"));
        assert_eq!(q.fd_number(), None);
        assert_eq!(q.flags, 4);
        let Some(FromWorker::QueryServer(q)) = parse(
            r#"{"cmd":"NODE_CLUSTER","act":"queryServer","index":0,"data":null,"address":"/run/a.sock","port":-1,"addressType":-1,"backlog":0,"readableAll":true,"seq":1}"#,
        ) else {
            panic!("not a queryServer");
        };
        assert_eq!(q.key(), "/run/a.sock:-1:-1:undefined:0");
        assert_eq!(q.describe(), "/run/a.sock");
        assert!(q.readable_all && !q.writable_all);
    }

    #[test]
    fn internal_messages_are_told_from_user_messages() {
        assert_eq!(parse(r#"{"act":"suicide"}"#), None);
        assert_eq!(parse(r#""ready""#), None);
        assert_eq!(parse(r#"{"cmd":"deploy"}"#), None);
        assert_eq!(
            parse(r#"{"cmd":"NODE_CLUSTER","act":"online","seq":0}"#),
            Some(FromWorker::Online)
        );
        assert_eq!(
            parse(r#"{"cmd":"NODE_HANDLE_ACK"}"#),
            Some(FromWorker::HandleAck)
        );
        assert_eq!(
            parse(r#"{"cmd":"NODE_CLUSTER","ack":7,"accepted":true,"seq":5}"#),
            Some(FromWorker::ConnectionReply {
                ack: 7,
                accepted: true
            })
        );
        assert_eq!(
            parse(
                r#"{"cmd":"NODE_CLUSTER","act":"close","key":"null:3000:4:undefined:0","seq":3}"#
            ),
            Some(FromWorker::Close {
                key: "null:3000:4:undefined:0".into()
            })
        );
        assert_eq!(
            parse(r#"{"cmd":"NODE_CLUSTER","act":"exitedAfterDisconnect","seq":4}"#),
            Some(FromWorker::ExitedAfterDisconnect { seq: json!(4) })
        );
    }

    #[test]
    fn replies_have_the_shape_node_expects() {
        let reply = with_handle(
            query_reply(
                0,
                "null:3000:4:undefined:0",
                &json!(1),
                &Value::Null,
                None,
                0,
            ),
            HandleType::Net,
        );
        assert_eq!(
            reply,
            json!({"cmd":"NODE_HANDLE","type":"net.Native","msg":{"cmd":"NODE_CLUSTER","errno":0,"key":"null:3000:4:undefined:0","ack":1,"data":null,"seq":0}})
        );
        let line = to_line(&new_connection("k", 9));
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let parsed: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed["msg"]["act"], "newconn");
        assert_eq!(parsed["msg"]["seq"], 9);
        assert_eq!(js_string(Some(&json!(3000.0))), "3000");
    }
}
