//! Three hosts in network namespaces, each running a service on its loopback behind a
//! `warden serve` sidecar on its own address, and the authority on a fourth address. The hosts
//! call each other through their sidecars; `tcpdump` on every host's link captures the
//! traffic, and every byte that crossed a link is TLS: each TCP stream is a sequence of TLS
//! records from its first byte, and none of the request paths, answers or join tokens appear
//! in the clear. A control capture shows the check does see plain text: a plain HTTP request
//! sent straight at an inbound listener is on the wire in the clear, and refused.
//!
//! Host A finds its peers by name (`b.mesh.test`, `c.mesh.test`) through the system resolver:
//! `ip netns exec` gives its processes `/etc/netns/<namespace>/hosts` as `/etc/hosts`, as a
//! DNS zone would give them the addresses; B and C use addresses.
//!
//! Needs root (network namespaces, veth pairs, a bridge), `ip`, `tcpdump`, `curl`, `bash` and
//! `python3`; skipped with a message when any is missing. Everything it creates is in its own
//! namespaces (the bridge too, so the host's firewall and addresses are never involved), named
//! with the test's pid, and removed when the test ends, passed or failed.
//!
//! ```text
//!   wdn-<pid>-a  10.213.0.2 eth0 ──┐
//!   wdn-<pid>-b  10.213.0.3 eth0 ──┼── link-{a,b,c}  br0 10.213.0.1  wdn-<pid>-sw (authority)
//!   wdn-<pid>-c  10.213.0.4 eth0 ──┘
//! ```

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use warden_test_util::Pki;

const ADMIN: &str = "admin-token-0123456789abcdef";
const AUTHORITY_IP: &str = "10.213.0.1";
const AUTHORITY_PORT: u16 = 8200;
const INBOUND_PORT: u16 = 15443;
const OUTBOUND_PORT: u16 = 15001;
const SERVICE_PORT: u16 = 8080;

/// The hosts: name, address, and whose SPIFFE IDs its inbound sidecar accepts.
const HOSTS: [(&str, &str, &[&str]); 3] = [
    ("a", "10.213.0.2", &["b", "c"]),
    ("b", "10.213.0.3", &["a"]),
    ("c", "10.213.0.4", &["a"]),
];

/// The calls made, from host to host through the caller's outbound sidecar, and the status
/// the caller gets.
const CALLS: [(&str, &str, u16); 6] = [
    ("a", "b", 200),
    ("a", "c", 200),
    ("b", "a", 200),
    ("c", "a", 200),
    ("b", "c", 403),
    ("c", "b", 403),
];

/// The service behind each sidecar: answers every GET with JSON naming itself, the path it
/// was asked for, the caller's identity as its sidecar passed it, and a reply marker; logs
/// each request (path and caller) to a file.
const SERVICE_PY: &str = r#"
import http.server, json, sys
name, port, reply, log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        subject = self.headers.get("x-warden-subject")
        with open(log, "a") as f:
            f.write("%s %s\n" % (self.path, subject))
        body = json.dumps({"service": name, "path": self.path, "subject": subject,
                           "auth": self.headers.get("x-warden-auth"), "reply": reply}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

fn host_ip(name: &str) -> &'static str {
    HOSTS.iter().find(|h| h.0 == name).unwrap().1
}

/// Why the test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Some(format!(
            "needs root for network namespaces (effective uid {euid})"
        ));
    }
    for (tool, arg) in [
        ("ip", "-V"),
        ("tcpdump", "--version"),
        ("curl", "--version"),
        ("bash", "--version"),
        ("python3", "--version"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Runs `ip args`, panicking with its stderr if it fails.
fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `args` run inside namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// The namespaces and every process started in them; all killed and removed when dropped.
struct Lab {
    pid: u32,
    namespaces: Vec<String>,
    procs: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, child) in self.procs.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting a namespace destroys the interfaces in it: the veth pairs and the bridge.
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
        }
    }
}

impl Lab {
    /// Creates the namespaces, or says why it cannot.
    fn new() -> Result<Self, String> {
        let pid = std::process::id();
        let mut lab = Lab {
            pid,
            namespaces: Vec::new(),
            procs: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        for n in ["sw", "a", "b", "c"] {
            let name = format!("wdn-{pid}-{n}");
            let o = Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .unwrap();
            if !o.status.success() {
                return Err(format!(
                    "`ip netns add {name}` failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            lab.namespaces.push(name);
        }
        lab.wire();
        Ok(lab)
    }

    fn ns(&self, n: &str) -> String {
        format!("wdn-{}-{n}", self.pid)
    }

    /// The bridge in the switch namespace (with the authority's address), and one veth pair
    /// per host: `eth0` in the host, `link-<host>` on the bridge.
    fn wire(&self) {
        let sw = self.ns("sw");
        ip(&["-n", &sw, "link", "set", "dev", "lo", "up"]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &sw,
            "addr",
            "add",
            &format!("{AUTHORITY_IP}/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &sw, "link", "set", "dev", "br0", "up"]);
        for (h, addr, _) in HOSTS {
            let ns = self.ns(h);
            let port = format!("link-{h}");
            ip(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            ip(&["-n", &sw, "link", "set", "dev", &port, "master", "br0"]);
            ip(&["-n", &sw, "link", "set", "dev", &port, "up"]);
            ip(&["-n", &ns, "link", "set", "dev", "lo", "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "dev", "eth0", "up"]);
        }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Starts `args` in namespace `ns` (its stderr to `<name>.log`), kept until the lab ends.
    fn spawn(&mut self, ns: &str, name: &str, args: &[&str]) {
        let log = std::fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        let child = in_ns(&self.ns(ns), args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.procs.push((name.to_owned(), child));
    }

    /// `warden serve` with `toml` in namespace `ns`.
    fn serve(&mut self, ns: &str, name: &str, toml: &str) {
        let cfg = self.path(&format!("{name}.toml"));
        std::fs::write(&cfg, toml).unwrap();
        self.spawn(
            ns,
            name,
            &[
                common::BIN,
                "serve",
                "--allow-root",
                "--config",
                cfg.to_str().unwrap(),
            ],
        );
    }

    /// Waits until `addr:port` in namespace `ns` accepts connections (probed from inside the
    /// namespace, so over its loopback and never on a link), or `name` exits (then its log).
    fn wait_port(&mut self, ns: &str, addr: &str, port: u16, name: &str) {
        let probe = format!("exec 3<>/dev/tcp/{addr}/{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = in_ns(&self.ns(ns), &["bash", "-c", &probe])
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if up {
                return;
            }
            let file = self.path(&format!("{name}.log"));
            let log = || std::fs::read_to_string(&file).unwrap();
            let child = &mut self.procs.iter_mut().find(|p| p.0 == name).unwrap().1;
            if let Some(status) = child.try_wait().unwrap() {
                panic!("{name} exited ({status}):\n{}", log());
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not listen on {addr}:{port}:\n{}",
                log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A call to the authority's admin API, from inside the switch namespace over HTTPS.
    fn admin(&self, path: &str, body: Value) -> Value {
        let url = format!("https://{AUTHORITY_IP}:{AUTHORITY_PORT}{path}");
        let (status, text) = curl(
            in_ns(
                &self.ns("sw"),
                &[
                    "curl",
                    "-sS",
                    "-m",
                    "10",
                    "--cacert",
                    self.path("authority-ca.pem").to_str().unwrap(),
                    "-H",
                    &format!("authorization: Bearer {ADMIN}"),
                    "-H",
                    "content-type: application/json",
                    "-w",
                    "\n%{http_code}",
                    "-d",
                    &body.to_string(),
                    &url,
                ],
            )
            .output()
            .unwrap(),
        );
        assert!(status < 300, "{path}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }
}

/// A curl run with `-w '\n%{http_code}'` appended: (status, body).
fn curl(o: Output) -> (u16, String) {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (
        code.trim().parse().unwrap_or(0),
        if o.status.success() {
            body.to_owned()
        } else {
            format!(
                "{body} (curl: {})",
                String::from_utf8_lossy(&o.stderr).trim()
            )
        },
    )
}

/// Calls `path` on host `to` from inside host `from`, through `from`'s outbound sidecar.
fn call(lab: &Lab, from: &str, to: &str, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{OUTBOUND_PORT}{path}");
    curl(
        in_ns(
            &lab.ns(from),
            &[
                "curl",
                "-sS",
                "-m",
                "10",
                "-H",
                &format!("host: {to}"),
                "-w",
                "\n%{http_code}",
                &url,
            ],
        )
        .output()
        .unwrap(),
    )
}

/// `tcpdump` writing one link's frames to a file, in the switch namespace.
struct Capture {
    link: String,
    file: PathBuf,
    child: Child,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a capture held.
struct Captured {
    link: String,
    raw: Vec<u8>,
    flows: Vec<Flow>,
    /// IP packets that were neither TCP nor ICMP/IGMP control messages.
    other: Vec<String>,
}

impl Capture {
    /// Starts capturing on `link` and returns once tcpdump says it is listening.
    fn start(lab: &Lab, link: &str, file: &str) -> Self {
        let file = lab.path(file);
        let mut child = in_ns(
            &lab.ns("sw"),
            &[
                "tcpdump",
                "-i",
                link,
                "-nn",
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
                "-w",
                file.to_str().unwrap(),
            ],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut said = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let listening = line.contains("listening on");
                    said.push(line);
                    if listening {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("tcpdump on {link} stopped: {}", said.join("\n"))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => assert!(
                    Instant::now() < deadline,
                    "tcpdump on {link} is not listening: {}",
                    said.join("\n")
                ),
            }
        }
        Capture {
            link: link.to_owned(),
            file,
            child,
            stderr: rx,
        }
    }

    /// Stops the capture once its file has stopped growing, and reads it.
    fn stop(&mut self) -> Captured {
        let size = || std::fs::metadata(&self.file).map_or(0, |m| m.len());
        let (mut last, mut steady) = (size(), 0);
        let deadline = Instant::now() + Duration::from_secs(3);
        while steady < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            let now = size();
            steady = if now == last { steady + 1 } else { 0 };
            last = now;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "tcpdump on {} did not stop",
                self.link
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let said: Vec<String> = self.stderr.iter().collect();
        let dropped = said.iter().find(|l| l.contains("dropped by kernel"));
        assert!(
            dropped.is_some_and(|l| l.trim_start().starts_with("0 ")),
            "tcpdump on {} lost packets: {}",
            self.link,
            said.join("\n")
        );
        let raw = std::fs::read(&self.file).unwrap();
        let (segments, other) = parse_pcap(&raw);
        Captured {
            link: self.link.clone(),
            raw,
            flows: flows(&segments),
            other,
        }
    }
}

/// One TCP segment from a capture.
struct Segment {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    syn: bool,
    data: Vec<u8>,
}

/// The data one side of a TCP connection sent, reassembled in sequence order.
struct Flow {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    data: Result<Vec<u8>, String>,
}

impl Flow {
    fn len(&self) -> usize {
        self.data.as_ref().map_or(0, Vec::len)
    }

    fn describe(&self) -> String {
        format!(
            "{}:{} -> {}:{}",
            self.src.0, self.src.1, self.dst.0, self.dst.1
        )
    }
}

/// The TCP segments of a pcap file of Ethernet frames, and a description of every IP packet
/// that was neither TCP nor an ICMP, ICMPv6 or IGMP control message (ARP is ignored).
fn parse_pcap(raw: &[u8]) -> (Vec<Segment>, Vec<String>) {
    assert!(raw.len() >= 24, "a pcap file has a 24-byte header");
    let magic = u32::from_le_bytes(raw[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let w: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    assert_eq!(u32_at(raw, 20) & 0xffff, 1, "link type is not Ethernet");
    let (mut segments, mut other) = (Vec::new(), Vec::new());
    let mut at = 24;
    while at + 16 <= raw.len() {
        let (caplen, len) = (u32_at(raw, at + 8) as usize, u32_at(raw, at + 12) as usize);
        assert_eq!(caplen, len, "a frame was cut short in the capture");
        let frame = &raw[at + 16..at + 16 + caplen];
        at += 16 + caplen;
        ethernet(frame, &mut segments, &mut other);
    }
    assert_eq!(at, raw.len(), "the capture ends in the middle of a frame");
    (segments, other)
}

fn ethernet(f: &[u8], segments: &mut Vec<Segment>, other: &mut Vec<String>) {
    let mut ethertype = u16::from_be_bytes([f[12], f[13]]);
    let mut at = 14;
    if ethertype == 0x8100 {
        ethertype = u16::from_be_bytes([f[16], f[17]]);
        at = 18;
    }
    let p = &f[at..];
    match ethertype {
        0x0806 => {}
        0x0800 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0;
            let src = IpAddr::from(<[u8; 4]>::try_from(&p[12..16]).unwrap());
            let dst = IpAddr::from(<[u8; 4]>::try_from(&p[16..20]).unwrap());
            match p[9] {
                _ if fragment => other.push(format!("an IPv4 fragment {src} -> {dst}")),
                6 => segments.push(tcp(src, dst, &p[ihl..total])),
                1 | 2 => {}
                proto => other.push(format!("IPv4 protocol {proto} {src} -> {dst}")),
            }
        }
        0x86dd => {
            let total = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            let src = IpAddr::from(<[u8; 16]>::try_from(&p[8..24]).unwrap());
            let dst = IpAddr::from(<[u8; 16]>::try_from(&p[24..40]).unwrap());
            let (mut next, mut at) = (p[6], 40);
            // Hop-by-hop (MLD reports carry one), routing and destination options.
            while matches!(next, 0 | 43 | 60) {
                next = p[at];
                at += (usize::from(p[at + 1]) + 1) * 8;
            }
            match next {
                6 => segments.push(tcp(src, dst, &p[at..total])),
                58 => {}
                proto => other.push(format!("IPv6 next header {proto} {src} -> {dst}")),
            }
        }
        t => other.push(format!("ethertype {t:#06x}")),
    }
}

fn tcp(src: IpAddr, dst: IpAddr, t: &[u8]) -> Segment {
    let offset = usize::from(t[12] >> 4) * 4;
    Segment {
        src: (src, u16::from_be_bytes([t[0], t[1]])),
        dst: (dst, u16::from_be_bytes([t[2], t[3]])),
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        syn: t[13] & 0x02 != 0,
        data: t[offset..].to_vec(),
    }
}

/// Groups segments into flows (a new SYN on the same addresses starts a new one) and
/// reassembles each in sequence order. A flow whose start was not captured, or with a hole in
/// it, is an error: its data could not be checked.
fn flows(segments: &[Segment]) -> Vec<Flow> {
    struct Open<'a> {
        isn: Option<u32>,
        segments: Vec<&'a Segment>,
    }
    /// Source and destination address and port.
    type Ends = ((IpAddr, u16), (IpAddr, u16));
    let mut order: Vec<Ends> = Vec::new();
    let mut open: HashMap<Ends, Vec<Open<'_>>> = HashMap::new();
    for s in segments {
        let key = (s.src, s.dst);
        let list = open.entry(key).or_insert_with(|| {
            order.push(key);
            Vec::new()
        });
        if s.syn {
            if list.last().is_none_or(|o| o.isn != Some(s.seq)) {
                list.push(Open {
                    isn: Some(s.seq),
                    segments: Vec::new(),
                });
            }
        } else if !s.data.is_empty() {
            if list.is_empty() {
                list.push(Open {
                    isn: None,
                    segments: Vec::new(),
                });
            }
            list.last_mut().unwrap().segments.push(s);
        }
    }
    let mut out = Vec::new();
    for key in order {
        for o in open.remove(&key).unwrap() {
            let data = match o.isn {
                None => Err("its start (SYN) is not in the capture".to_owned()),
                Some(isn) => {
                    let mut parts: Vec<(u32, &[u8])> = o
                        .segments
                        .iter()
                        .map(|s| (s.seq.wrapping_sub(isn.wrapping_add(1)), &s.data[..]))
                        .collect();
                    parts.sort_by_key(|p| p.0);
                    let mut data = Vec::new();
                    let mut hole = None;
                    for (offset, bytes) in parts {
                        let offset = offset as usize;
                        if offset > data.len() {
                            hole = Some(format!("bytes {}..{offset} are missing", data.len()));
                            break;
                        }
                        let fresh = data.len() - offset;
                        if fresh < bytes.len() {
                            data.extend_from_slice(&bytes[fresh..]);
                        }
                    }
                    hole.map_or(Ok(data), Err)
                }
            };
            out.push(Flow {
                src: key.0,
                dst: key.1,
                data,
            });
        }
    }
    out
}

/// The content types of the TLS records `data` consists of, or why it is not a stream of
/// TLS records from its first byte to its last.
fn tls_records(data: &[u8]) -> Result<Vec<u8>, String> {
    let show = |at: usize| {
        let end = data.len().min(at + 24);
        format!(
            "{:02x?} {:?}",
            &data[at..end],
            String::from_utf8_lossy(&data[at..end])
        )
    };
    if data.first() != Some(&0x16) {
        return Err(format!("does not start with a TLS handshake: {}", show(0)));
    }
    let mut types = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data.len() - at < 5 {
            return Err(format!("ends in a partial record header at byte {at}"));
        }
        let (kind, major, minor) = (data[at], data[at + 1], data[at + 2]);
        let len = usize::from(u16::from_be_bytes([data[at + 3], data[at + 4]]));
        if !(20..=23).contains(&kind) || major != 3 || !(1..=4).contains(&minor) {
            return Err(format!("not a TLS record at byte {at}: {}", show(at)));
        }
        if len > (1 << 14) + 2048 {
            return Err(format!("a TLS record of {len} bytes at byte {at}"));
        }
        if data.len() - at - 5 < len {
            return Err(format!("a record cut short at byte {at}"));
        }
        types.push(kind);
        at += 5 + len;
    }
    Ok(types)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn ip4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

/// The flows from `from` to `to:port` that carried data.
fn flows_to<'a>(c: &'a Captured, from: &str, to: &str, port: u16) -> Vec<&'a Flow> {
    c.flows
        .iter()
        .filter(|f| f.src.0 == ip4(from) && f.dst == (ip4(to), port) && f.len() > 0)
        .collect()
}

/// The answers to the flows in `requests`.
fn replies<'a>(c: &'a Captured, requests: &[&Flow]) -> Vec<&'a Flow> {
    c.flows
        .iter()
        .filter(|f| requests.iter().any(|r| f.src == r.dst && f.dst == r.src) && f.len() > 0)
        .collect()
}

#[test]
fn three_hosts_in_network_namespaces_exchange_only_tls_on_the_links() {
    if let Some(why) = missing_prerequisite() {
        eprintln!(
            "SKIPPED three_hosts_in_network_namespaces_exchange_only_tls_on_the_links: {why}"
        );
        return;
    }
    let mut lab = match Lab::new() {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!(
                "SKIPPED three_hosts_in_network_namespaces_exchange_only_tls_on_the_links: {why}"
            );
            return;
        }
    };
    let pid = lab.pid;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = format!("wdn-secret-marker-{pid}-{stamp}");

    // The capture covers everything from before the authority starts: the sidecars' first
    // contact with their join tokens too.
    let mut captures: Vec<Capture> = HOSTS
        .iter()
        .map(|(h, _, _)| Capture::start(&lab, &format!("link-{h}"), &format!("{h}.pcap")))
        .collect();

    // The authority, on the bridge's address, over HTTPS with a certificate for that address.
    let pki = Pki::new("netns-authority");
    let (cert, key) = pki.server("authority", &[AUTHORITY_IP]);
    std::fs::copy(pki.ca_file(), lab.path("authority-ca.pem")).unwrap();
    crate::common::write_secret(lab.path("kek"), [3u8; 32]);
    crate::common::write_secret(lab.path("admin"), ADMIN);
    let authority = format!(
        "[reload]\nwatch = false\n[access_log]\nenabled = false\n[admin]\nenabled = false\n\
         [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:8080\"\n\
         [authority]\nenabled = true\nlisten = \"{AUTHORITY_IP}:{AUTHORITY_PORT}\"\n\
         storage = \"{}\"\nkey_encryption_key = \"file:{}\"\nadmin_token = \"file:{}\"\n\
         [[authority.tls.certificates]]\ncert = \"{}\"\nkey = \"file:{}\"\n\
         [authority.ca]\ntrust_domain = \"example.org\"\n",
        lab.path("authority.db").display(),
        lab.path("kek").display(),
        lab.path("admin").display(),
        cert.display(),
        key.display(),
    );
    lab.serve("sw", "authority", &authority);
    lab.wait_port("sw", AUTHORITY_IP, AUTHORITY_PORT, "authority");

    // Each host: a registration and a join token, its service, and its sidecar.
    let mut tokens = Vec::new();
    std::fs::write(lab.path("service.py"), SERVICE_PY).unwrap();
    for (h, addr, callers) in HOSTS {
        let entry = lab.admin(
            "/admin/workloads",
            json!({"spiffe_id": format!("spiffe://example.org/{h}")}),
        );
        let id = entry["id"].as_str().unwrap();
        let token = lab.admin(&format!("/admin/workloads/{id}/join-token"), json!({}));
        let token = token["token"].as_str().unwrap().to_owned();
        crate::common::write_secret(lab.path(&format!("{h}.token")), &token);
        tokens.push(token);

        let script = lab.path("service.py");
        let requests = lab.path(&format!("{h}.requests"));
        lab.spawn(
            h,
            &format!("service-{h}"),
            &[
                "python3",
                script.to_str().unwrap(),
                h,
                &SERVICE_PORT.to_string(),
                &format!("wdn-reply-marker-{pid}-{h}"),
                requests.to_str().unwrap(),
            ],
        );

        let peers: Vec<&str> = HOSTS.iter().map(|p| p.0).filter(|p| *p != h).collect();
        let subjects: Vec<String> = callers
            .iter()
            .map(|c| format!("\"spiffe://example.org/{c}\""))
            .collect();
        // A resolves its peers' names (its own hosts file); B and C are given addresses.
        let peer_host = |p: &str| {
            if h == "a" {
                format!("{p}.mesh.test")
            } else {
                host_ip(p).to_owned()
            }
        };
        if h == "a" {
            let etc = format!("/etc/netns/{}", lab.ns(h));
            std::fs::create_dir_all(&etc).unwrap();
            let mut hosts = "127.0.0.1 localhost\n".to_owned();
            for p in &peers {
                hosts.push_str(&format!("{} {p}.mesh.test\n", host_ip(p)));
            }
            std::fs::write(format!("{etc}/hosts"), hosts).unwrap();
        }
        let mut toml = format!(
            "[reload]\nwatch = false\n[access_log]\nenabled = false\n[admin]\nenabled = false\n\
             [sidecar]\nauthority = \"https://{AUTHORITY_IP}:{AUTHORITY_PORT}\"\n\
             authority_ca = \"{}\"\ntrust_domain = \"example.org\"\njoin_token = \"file:{}\"\n\
             [[listeners]]\nname = \"inbound\"\naddress = \"{addr}:{INBOUND_PORT}\"\n\
             role = \"inbound\"\nroutes = [\"service\"]\n\
             [[listeners]]\nname = \"outbound\"\naddress = \"127.0.0.1:{OUTBOUND_PORT}\"\n\
             role = \"outbound\"\nroutes = [{}]\n\
             [[clusters]]\nname = \"local\"\nendpoints = [\"http://127.0.0.1:{SERVICE_PORT}\"]\n\
             [[routes]]\nname = \"service\"\ncluster = \"local\"\npath_prefix = \"/\"\n\
             [routes.auth]\naccept = [\"client_cert\"]\nsubjects = [{}]\n",
            lab.path("authority-ca.pem").display(),
            lab.path(&format!("{h}.token")).display(),
            peers
                .iter()
                .map(|p| format!("\"to-{p}\""))
                .collect::<Vec<_>>()
                .join(", "),
            subjects.join(", "),
        );
        for p in &peers {
            toml.push_str(&format!(
                "[[clusters]]\nname = \"{p}\"\nendpoints = [\"https://{}:{INBOUND_PORT}\"]\n\
                 spiffe_ids = [\"spiffe://example.org/{p}\"]\n\
                 [[routes]]\nname = \"to-{p}\"\ncluster = \"{p}\"\nhosts = [\"{p}\"]\n\
                 path_prefix = \"/\"\nauth = \"none\"\n",
                peer_host(p)
            ));
        }
        lab.serve(h, &format!("sidecar-{h}"), &toml);
    }
    for (h, addr, _) in HOSTS {
        lab.wait_port(h, "127.0.0.1", SERVICE_PORT, &format!("service-{h}"));
        lab.wait_port(h, addr, INBOUND_PORT, &format!("sidecar-{h}"));
        lab.wait_port(h, "127.0.0.1", OUTBOUND_PORT, &format!("sidecar-{h}"));
    }

    // The calls: allowed callers reach the service with their SPIFFE ID, the others are
    // refused by the callee's sidecar before its service sees anything.
    for (from, to, want) in CALLS {
        let path = format!("/{secret}/from-{from}-to-{to}");
        let (status, body) = call(&lab, from, to, &path);
        assert_eq!(status, want, "{from} -> {to}: {body}");
        let seen = std::fs::read_to_string(lab.path(&format!("{to}.requests"))).unwrap_or_default();
        if want == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["service"], to, "{body}");
            assert_eq!(v["path"], path.as_str(), "{body}");
            assert_eq!(
                v["subject"],
                format!("spiffe://example.org/{from}"),
                "{body}"
            );
            assert_eq!(v["auth"], "client_cert", "{body}");
            assert_eq!(v["reply"], format!("wdn-reply-marker-{pid}-{to}"), "{body}");
            assert!(seen.contains(&path), "{to} did not log {path}: {seen}");
        } else {
            assert!(!seen.contains(&path), "{to} served a refused call: {seen}");
        }
    }

    let captured: Vec<Captured> = captures.iter_mut().map(Capture::stop).collect();
    // What must never cross a link in the clear: the request paths, the services' answers,
    // the join tokens, and HTTP itself.
    let mut clear: Vec<String> = vec![secret.clone(), "HTTP/1.1".into(), "x-warden".into()];
    clear.extend(
        HOSTS
            .iter()
            .map(|h| format!("wdn-reply-marker-{pid}-{}", h.0)),
    );
    clear.extend(tokens.iter().cloned());
    for c in &captured {
        let link = &c.link;
        assert!(c.other.is_empty(), "{link}: not TCP: {:?}", c.other);
        for f in &c.flows {
            match &f.data {
                Err(why) => panic!("{link}: {}: {why}", f.describe()),
                Ok(data) if data.is_empty() => {}
                Ok(data) => {
                    if let Err(why) = tls_records(data) {
                        panic!("{link}: {} is not TLS: {why}", f.describe());
                    }
                    for s in &clear {
                        assert!(!contains(data, s), "{link}: {} carries {s:?}", f.describe());
                    }
                }
            }
        }
        for s in &clear {
            assert!(!contains(&c.raw, s), "{link}: {s:?} is in the capture");
        }
        let carrying: Vec<&Flow> = c.flows.iter().filter(|f| f.len() > 0).collect();
        eprintln!(
            "{link}: {} bytes captured; {} TCP flows carried {} bytes, all TLS records",
            c.raw.len(),
            carrying.len(),
            carrying.iter().map(|f| f.len()).sum::<usize>()
        );
    }

    // And the traffic the checks are about did cross the links: each host got its SVID from
    // the authority over TLS on its link, and each call went from the caller's link to the
    // callee's as TLS records, with application data both ways.
    for (h, addr, _) in HOSTS {
        let c = &captured
            .iter()
            .find(|c| c.link == format!("link-{h}"))
            .unwrap();
        let to_authority = flows_to(c, addr, AUTHORITY_IP, AUTHORITY_PORT);
        assert!(
            !to_authority.is_empty(),
            "link-{h}: no TLS to the authority"
        );
        assert!(
            !replies(c, &to_authority).is_empty(),
            "link-{h}: no answer from the authority"
        );
    }
    for (from, to, _) in CALLS {
        for h in [from, to] {
            let c = &captured
                .iter()
                .find(|c| c.link == format!("link-{h}"))
                .unwrap();
            let requests = flows_to(c, host_ip(from), host_ip(to), INBOUND_PORT);
            let answers = replies(c, &requests);
            for (dir, flows) in [("requests", &requests), ("answers", &answers)] {
                let app_data = flows
                    .iter()
                    .filter_map(|f| tls_records(f.data.as_ref().unwrap()).ok())
                    .flatten()
                    .filter(|t| *t == 23)
                    .count();
                assert!(
                    app_data > 0,
                    "link-{h}: no TLS application data in the {dir} of {from} -> {to}"
                );
            }
        }
    }

    // The control: the same check on plain HTTP sent straight at B's inbound listener from A.
    // It crosses the links in the clear (so the capture would show a sidecar that did not use
    // TLS), and B's sidecar refuses it.
    let mut control = Capture::start(&lab, "link-b", "control.pcap");
    let plain = format!("wdn-plain-marker-{pid}-{stamp}");
    let (status, _) = curl(
        in_ns(
            &lab.ns("a"),
            &[
                "curl",
                "-sS",
                "-m",
                "5",
                "-w",
                "\n%{http_code}",
                &format!("http://{}:{INBOUND_PORT}/{plain}", host_ip("b")),
            ],
        )
        .output()
        .unwrap(),
    );
    assert_ne!(status, 200, "B's inbound listener answered plain HTTP");
    let c = control.stop();
    assert!(
        contains(&c.raw, &plain),
        "the control request is not in its capture"
    );
    let requests = flows_to(&c, host_ip("a"), host_ip("b"), INBOUND_PORT);
    assert_eq!(requests.len(), 1, "the control request is not one flow");
    let why = tls_records(requests[0].data.as_ref().unwrap()).unwrap_err();
    assert!(why.contains("does not start with a TLS handshake"), "{why}");
    let seen = std::fs::read_to_string(lab.path("b.requests")).unwrap_or_default();
    assert!(
        !seen.contains(&plain),
        "B's service got the plain request: {seen}"
    );

    drop(captures);
    drop(lab);
}

#[test]
fn the_pcap_checks_find_plain_text_and_accept_tls_records() {
    // A TLS stream: a handshake record then application data, split anywhere.
    let mut tls = vec![0x16, 0x03, 0x01, 0x00, 0x02, 0x01, 0x00];
    tls.extend([0x17, 0x03, 0x03, 0x00, 0x03, 0xaa, 0xbb, 0xcc]);
    assert_eq!(tls_records(&tls).unwrap(), vec![0x16, 0x17]);
    assert!(tls_records(&tls[..tls.len() - 1]).is_err());
    assert!(tls_records(b"GET / HTTP/1.1\r\n\r\n").is_err());
    let mut smuggled = tls.clone();
    smuggled.extend(b"GET / HTTP/1.1\r\n\r\n");
    assert!(tls_records(&smuggled).is_err());

    // Segments out of order and retransmitted reassemble; a hole is reported.
    let a = (IpAddr::V6(Ipv6Addr::LOCALHOST), 1000);
    let b = (IpAddr::V6(Ipv6Addr::LOCALHOST), 2000);
    let seg = |seq: u32, syn: bool, data: &[u8]| Segment {
        src: a,
        dst: b,
        seq,
        syn,
        data: data.to_vec(),
    };
    let isn = u32::MAX - 2;
    let f = flows(&[
        seg(isn, true, b""),
        seg(isn.wrapping_add(4), false, b"def"),
        seg(isn.wrapping_add(1), false, b"abc"),
        seg(isn.wrapping_add(1), false, b"abcd"),
    ]);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].data.as_deref().unwrap(), b"abcdef");
    let f = flows(&[seg(7, true, b""), seg(12, false, b"x")]);
    assert!(f[0].data.is_err());
    let f = flows(&[seg(7, false, b"x")]);
    assert!(f[0].data.is_err());
}
