//! `ulvsadm import-keepalived FILE`: a keepalived.conf's `virtual_server`
//! blocks as a ulvs config (slow path, run once by the operator).
//!
//! The reader follows keepalived's own syntax: one statement a line, blocks
//! in braces (a brace may also stand on its own line), comments from `#` or
//! `!` at the start of a word, double-quoted strings, and `include` (and its
//! `includer`/`includem`/... variants) with `*`/`?` wildcards in the file
//! name, relative to the including file's directory.
//!
//! What it translates, and how (a translation that changes behaviour a
//! little is written as a YAML comment above the service, not as a note):
//!
//! * `lb_kind`/`lvs_method` NAT, DR, TUN → `mode` (keepalived's default NAT).
//! * `protocol` TCP, UDP → `protocol` (default TCP).
//! * `lb_algo`/`lvs_sched`: ulvs has Maglev only. `sh` and `mh` (source
//!   hashing) become `maglev-client`, unless `sh-port`/`mh-port` put the port
//!   into the hash; every other algorithm (rr, wrr, lc, wlc, ...) becomes
//!   `maglev` with the weights kept: consistent hashing instead of turns or
//!   connection counts — a comment, not a note, since the director has no
//!   other algorithm to offer.
//! * `persistence_timeout` → `scheduler: maglev-client`: a client keeps its
//!   server while the set of servers is stable, with no timeout.
//! * `real_server IP [PORT]` and `weight` → `real_servers` (`IP:PORT` in
//!   NAT when the port differs from the service's, `[IPv6]:PORT` for IPv6).
//! * IPv6 virtual servers (`virtual_server 2001:db8:100::1 80`) as IPv4
//!   ones; a real server of the other family than its VIP is a note (a ulvs
//!   service is one family).
//! * `TCP_CHECK` and `HTTP_GET` → `health` (`tcp`, `http` with the first
//!   `url`'s `path` and `status_code`), `connect_port` → `health.port`,
//!   `connect_timeout` → `timeout_ms` (at most the interval), `delay_loop` →
//!   `interval_ms`, `retry`/`nb_get_retry` N → `fall: N+1` (the first failure
//!   and N retries), `rise: 1` (keepalived takes a server back at its first
//!   success). Timers may sit on the virtual server, the real server or the
//!   checker, as in keepalived. `delay_before_retry` has no counterpart and
//!   is passed over: ulvs probes every `interval_ms`, failed or not, so a
//!   dead server is declared down after `fall` intervals rather than after
//!   keepalived's `retry` × `delay_before_retry`. ulvs checks all servers of a service alike:
//!   a server whose check differs from the first one's is a note.
//! * `inhibit_on_failure` on every real server → `on_server_down: keep`
//!   (established connections stay with a failed server, as with weight 0);
//!   on some only, a note (the setting is director-wide).
//! * `interface`: `--interface` when given, else the `interface` of the
//!   `vrrp_instance` whose `virtual_ipaddress` holds a VIP, else `eth0`
//!   (said in a comment: keepalived's LVS config has no interface).
//!
//! Everything else inside a `virtual_server` — fwmark and group services,
//! SCTP, `sorry_server`, `persistence_granularity`, quorum settings,
//! the other checkers (`MISC_CHECK`, `SSL_GET`, `SMTP_CHECK`, `DNS_CHECK`,
//! ...), `digest`, `virtualhost`, notify scripts, ... — becomes a note
//! `FILE:LINE: what`. What lies outside `virtual_server` blocks (VRRP,
//! global_defs) is keepalived's own business and is passed over.

use std::fmt;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where a statement was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Something that was not translated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub loc: Loc,
    pub what: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.loc, self.what)
    }
}

/// Choices the operator makes on the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The director's interface (keepalived's LVS config does not say).
    pub interface: Option<String>,
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Import {
    /// The ulvs config (YAML).
    pub yaml: String,
    /// Services written to it.
    pub services: usize,
    /// What was not translated, in file order.
    pub notes: Vec<Note>,
}

/// The file could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{file}: cannot read: {err}")]
pub struct ImportError {
    pub file: String,
    pub err: std::io::Error,
}

/// How deep `include`s may nest (keepalived's own limit is similar; a file
/// that includes itself stops here).
const MAX_INCLUDE_DEPTH: usize = 8;
/// Most files one import reads (includes that include themselves over and
/// over stop here).
const MAX_FILES: usize = 1000;

thread_local! {
    static FILES_READ: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Files included so far by the import running on this thread, after
/// adding `add`.
fn files_read(add: usize) -> usize {
    FILES_READ.with(|c| {
        c.set(c.get() + add);
        c.get()
    })
}

/// Most words read from all files together: includes that fan out (a
/// file included many times over) stop here.
const MAX_TOKENS: usize = 4_000_000;
/// keepalived's defaults.
const DEFAULT_DELAY_LOOP_MS: u64 = 60_000;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_RETRY: u32 = 1;
/// ulvs's limits (see `control::config`).
const MAX_INTERVAL_MS: u64 = 86_400_000;
const MAX_FALL: u32 = 1000;

/// Read `path` (and its includes) and translate it.
///
/// # Errors
/// [`ImportError`] when `path` itself cannot be read; an unreadable
/// include is a note.
pub fn import(path: &Path, opts: &Options) -> Result<Import, ImportError> {
    let shown = path.display().to_string();
    let text = std::fs::read(path).map_err(|err| ImportError {
        file: shown.clone(),
        err,
    })?;
    Ok(import_from(
        &String::from_utf8_lossy(&text),
        Some(path),
        &shown,
        opts,
    ))
}

/// Translate `text` as the contents of a file named `file` (in the notes);
/// its `include`s are not followed (each is a note).
pub fn import_text(text: &str, file: &str, opts: &Options) -> Import {
    import_from(text, None, file, opts)
}

fn import_from(text: &str, path: Option<&Path>, shown: &str, opts: &Options) -> Import {
    let mut notes = Vec::new();
    let mut toks = Vec::new();
    FILES_READ.with(|c| c.set(0));
    lex(text, path, shown, 0, &mut toks, &mut notes);
    let mut pos = 0;
    let tree = block(&toks, &mut pos, None, &mut notes);
    translate(shown, &tree, opts, notes)
}

// ---------------------------------------------------------------- reading

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Eol,
}

#[derive(Debug, Clone)]
struct Lexed {
    tok: Tok,
    loc: Loc,
}

/// The words and braces of one line (a comment ends it).
fn split_line(line: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' | '!' => break,
            '{' | '}' => {
                chars.next();
                out.push(if c == '{' { Tok::Open } else { Tok::Close });
            }
            '"' => {
                chars.next();
                let mut w = String::new();
                for c in chars.by_ref() {
                    if c == '"' {
                        break;
                    }
                    w.push(c);
                }
                out.push(Tok::Word(w));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || c == '{' || c == '}' {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    out
}

const INCLUDES: [&str; 6] = [
    "include", "includer", "includem", "includew", "includeb", "includea",
];

/// The words of `text` (read from `path`, shown as `shown`), includes
/// spliced in when `path` is known.
fn lex(
    text: &str,
    path: Option<&Path>,
    shown: &str,
    depth: usize,
    out: &mut Vec<Lexed>,
    notes: &mut Vec<Note>,
) {
    for (i, line) in text.lines().enumerate() {
        let loc = Loc {
            file: shown.to_string(),
            line: i + 1,
        };
        let words = split_line(line);
        if let [Tok::Word(kw), Tok::Word(pattern), ..] = words.as_slice() {
            if INCLUDES.contains(&kw.as_str()) {
                match path {
                    Some(path) => include(pattern, path, &loc, depth, out, notes),
                    None => notes.push(Note {
                        loc,
                        what: format!("{kw} {pattern}: not followed (no file to resolve it from)"),
                    }),
                }
                continue;
            }
        }
        for tok in words {
            out.push(Lexed {
                tok,
                loc: loc.clone(),
            });
        }
        out.push(Lexed { tok: Tok::Eol, loc });
    }
}

fn include(pattern: &str, from: &Path, loc: &Loc, depth: usize, out: &mut Vec<Lexed>, notes: &mut Vec<Note>) {
    let note = |notes: &mut Vec<Note>, what: String| {
        notes.push(Note {
            loc: loc.clone(),
            what,
        })
    };
    if out.len() >= MAX_TOKENS {
        note(
            notes,
            format!("include {pattern}: not read (more than {MAX_TOKENS} words read already)"),
        );
        return;
    }
    if files_read(0) >= MAX_FILES {
        note(
            notes,
            format!("include {pattern}: not read (more than {MAX_FILES} files read already)"),
        );
        return;
    }
    if depth >= MAX_INCLUDE_DEPTH {
        note(
            notes,
            format!("include {pattern}: nested more than {MAX_INCLUDE_DEPTH} deep; not read"),
        );
        return;
    }
    let base = from.parent().unwrap_or(Path::new("."));
    let full = base.join(pattern);
    let files = match expand(&full) {
        Ok(f) if f.is_empty() => {
            note(notes, format!("include {pattern}: matches no file"));
            return;
        }
        Ok(f) => f,
        Err(e) => {
            note(notes, format!("include {pattern}: cannot read: {e}"));
            return;
        }
    };
    for f in files {
        match std::fs::read(&f) {
            Ok(text) => {
                files_read(1);
                let shown = f.display().to_string();
                lex(
                    &String::from_utf8_lossy(&text),
                    Some(&f),
                    &shown,
                    depth + 1,
                    out,
                    notes,
                );
            }
            Err(e) => note(notes, format!("include {}: cannot read: {e}", f.display())),
        }
    }
}

/// The files a path names: itself, or with `*`/`?` in its last component
/// the matching files of its directory, sorted.
fn expand(full: &Path) -> std::io::Result<Vec<PathBuf>> {
    let name = full.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some(name) = name.filter(|n| n.contains(['*', '?'])) else {
        return Ok(vec![full.to_path_buf()]);
    };
    let dir = full.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .filter(|e| glob(name.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
        .filter(|e| e.path().is_file())
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// `*` and `?` matching (a leading dot is not special: keepalived uses
/// glob(3) without GLOB_PERIOD, which hides dot files; so do we). Greedy
/// with one backtrack point, so linear in practice, never exponential.
fn glob(p: &[u8], s: &[u8]) -> bool {
    if s.first() == Some(&b'.') && p.first() != Some(&b'.') {
        return false;
    }
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// One statement: a keyword, its arguments, and its block if it has one.
#[derive(Debug, Clone)]
struct Node {
    key: String,
    args: Vec<String>,
    children: Option<Vec<Node>>,
    loc: Loc,
}

impl Node {
    fn children(&self) -> &[Node] {
        self.children.as_deref().unwrap_or(&[])
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }
}

/// Deepest block nesting read (keepalived's own configs nest 4 deep); a
/// deeper block is skipped whole, so a hostile file cannot exhaust the stack.
const MAX_NESTING: usize = 32;

/// Skip the rest of a block opened before `*pos` (up to its `}`).
fn skip_block(toks: &[Lexed], pos: &mut usize) {
    let mut depth = 1usize;
    while let Some(t) = toks.get(*pos) {
        *pos += 1;
        match t.tok {
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// The statements up to the `}` that closes `opened` (or the end).
fn block(toks: &[Lexed], pos: &mut usize, opened: Option<&Loc>, notes: &mut Vec<Note>) -> Vec<Node> {
    block_at(toks, pos, opened, 0, notes)
}

fn block_at(
    toks: &[Lexed],
    pos: &mut usize,
    opened: Option<&Loc>,
    depth: usize,
    notes: &mut Vec<Note>,
) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    let mut cur_loc: Option<Loc> = None;
    let flush = |nodes: &mut Vec<Node>, cur: &mut Vec<String>, loc: &mut Option<Loc>, children| {
        if let Some(loc) = loc.take() {
            let mut words = std::mem::take(cur).into_iter();
            let key = words.next().unwrap_or_default();
            nodes.push(Node {
                key,
                args: words.collect(),
                children,
                loc,
            });
        }
    };
    while let Some(t) = toks.get(*pos) {
        *pos += 1;
        match &t.tok {
            Tok::Word(w) => {
                if cur_loc.is_none() {
                    cur_loc = Some(t.loc.clone());
                }
                cur.push(w.clone());
            }
            Tok::Eol => flush(&mut nodes, &mut cur, &mut cur_loc, None),
            Tok::Open if depth >= MAX_NESTING => {
                skip_block(toks, pos);
                notes.push(Note {
                    loc: t.loc.clone(),
                    what: format!("blocks nested more than {MAX_NESTING} deep; skipped"),
                });
            }
            Tok::Open => {
                let children = block_at(toks, pos, Some(&t.loc), depth + 1, notes);
                if cur_loc.is_some() {
                    flush(&mut nodes, &mut cur, &mut cur_loc, Some(children));
                } else if let Some(last) = nodes.last_mut().filter(|n| n.children.is_none()) {
                    // A brace on a line of its own opens the previous statement's block.
                    last.children = Some(children);
                } else {
                    notes.push(Note {
                        loc: t.loc.clone(),
                        what: "a block without a keyword; skipped".into(),
                    });
                }
            }
            Tok::Close => {
                flush(&mut nodes, &mut cur, &mut cur_loc, None);
                if opened.is_some() {
                    return nodes;
                }
                notes.push(Note {
                    loc: t.loc.clone(),
                    what: "'}' closes no block".into(),
                });
            }
        }
    }
    flush(&mut nodes, &mut cur, &mut cur_loc, None);
    if let Some(loc) = opened {
        notes.push(Note {
            loc: loc.clone(),
            what: "block not closed before the end of the file".into(),
        });
    }
    nodes
}

// ------------------------------------------------------------ translating

/// A health check as ulvs will run it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Check {
    http: Option<(String, u16)>,
    port: Option<u16>,
    interval_ms: u64,
    timeout_ms: u64,
    fall: u32,
}

/// keepalived's checker timers, inherited virtual server → real server →
/// checker.
#[derive(Debug, Clone, Copy, Default)]
struct Timers {
    delay_loop_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    retry: Option<u32>,
}

struct Server {
    addr: IpAddr,
    port: Option<u16>,
    weight: u32,
    inhibit: bool,
    check: Option<(Check, Loc)>,
    /// It had a checker ulvs cannot run.
    other_check: bool,
    loc: Loc,
}

struct Service {
    vip: IpAddr,
    port: u16,
    udp: bool,
    mode: &'static str,
    client_affinity: bool,
    comments: Vec<String>,
    health: Option<Check>,
    servers: Vec<Server>,
    loc: Loc,
}

impl Service {
    fn name(&self) -> String {
        format!(
            "{}-{}-{}",
            if self.udp { "udp" } else { "tcp" },
            self.vip,
            self.port
        )
    }
}

/// Collects notes; `skip` says the thing was not translated.
struct Notes(Vec<Note>);

impl Notes {
    fn add(&mut self, loc: &Loc, what: impl Into<String>) {
        self.0.push(Note {
            loc: loc.clone(),
            what: what.into(),
        });
    }
    fn not_translated(&mut self, n: &Node, why: &str) {
        let mut stmt = n.key.clone();
        for a in &n.args {
            stmt.push(' ');
            stmt.push_str(a);
        }
        if n.children.is_some() {
            stmt.push_str(" {...}");
        }
        self.add(&n.loc, format!("{stmt}: not translated ({why})"));
    }
}

/// Seconds (keepalived timers take fractions) as milliseconds, at least 1.
fn secs_ms(s: Option<&str>) -> Option<u64> {
    let v: f64 = s?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then(|| ((v * 1000.0).round() as u64).max(1))
}

fn port(s: Option<&str>) -> Option<u16> {
    s?.parse().ok()
}

fn translate(file: &str, tree: &[Node], opts: &Options, notes: Vec<Note>) -> Import {
    let mut notes = Notes(notes);
    let mut services: Vec<Service> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    for n in tree {
        match n.key.as_str() {
            "virtual_server" => {
                if let Some(s) = virtual_server(n, &mut notes) {
                    let clash = services.iter().find(|o| {
                        o.vip == s.vip && o.udp == s.udp && (o.port == s.port || o.port == 0 || s.port == 0)
                    });
                    match clash {
                        Some(o) => notes.add(
                            &n.loc,
                            format!(
                                "virtual_server {} {}: not translated (overlaps the one at line {})",
                                s.vip, s.port, o.loc.line
                            ),
                        ),
                        None => services.push(s),
                    }
                }
            }
            "vrrp_instance" | "vrrp_sync_group" => header.push(format!(
                "{} {} ({}) stays keepalived's: ulvs does no VRRP (see README, High availability).",
                n.key,
                n.args.join(" "),
                n.loc
            )),
            _ => {}
        }
    }
    let (interface, why) = interface(tree, &services, opts);
    let inhibit: Vec<&Server> = services.iter().flat_map(|s| &s.servers).collect();
    let keep = !inhibit.is_empty() && inhibit.iter().all(|r| r.inhibit);
    if !keep {
        for r in inhibit.iter().filter(|r| r.inhibit) {
            notes.add(
                &r.loc,
                "inhibit_on_failure: not translated (on_server_down is director-wide, and not every real server has it)",
            );
        }
    }
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# ulvs config imported from {} by ulvsadm import-keepalived.",
        comment(file)
    );
    let _ = writeln!(y, "# Check it: ulvs-director --check --config THIS_FILE");
    for h in &header {
        let _ = writeln!(y, "# {}", comment(h));
    }
    let _ = writeln!(y, "interface: {}  # {}", yaml_str(&interface), comment(&why));
    if keep {
        let _ = writeln!(
            y,
            "on_server_down: keep  # inhibit_on_failure on every real server: established connections stay"
        );
    }
    if services.is_empty() {
        let what = if tree.iter().any(|n| n.key == "virtual_server") {
            "no virtual_server could be translated; the config printed has no service and is not valid"
        } else {
            "no virtual_server block: nothing to import; the config printed has no service and is not valid"
        };
        notes.add(
            &Loc {
                file: file.to_string(),
                line: 1,
            },
            what,
        );
        let _ = writeln!(y, "services: []");
    } else {
        let _ = writeln!(y, "services:");
    }
    for s in &services {
        render(&mut y, s);
    }
    let mut notes = notes.0;
    notes.sort_by(|a, b| (&a.loc.file, a.loc.line).cmp(&(&b.loc.file, b.loc.line)));
    notes.dedup();
    Import {
        yaml: y,
        services: services.len(),
        notes,
    }
}

/// The director's interface and where it came from.
fn interface(tree: &[Node], services: &[Service], opts: &Options) -> (String, String) {
    if let Some(i) = &opts.interface {
        return (i.clone(), "from --interface".into());
    }
    for n in tree.iter().filter(|n| n.key == "vrrp_instance") {
        let Some(ifc) = n
            .children()
            .iter()
            .find(|c| c.key == "interface")
            .and_then(|c| c.arg(0))
        else {
            continue;
        };
        let holds_vip = n
            .children()
            .iter()
            .filter(|c| c.key == "virtual_ipaddress")
            .flat_map(|c| c.children())
            .filter_map(|a| a.key.split('/').next()?.parse::<IpAddr>().ok())
            .any(|a| services.iter().any(|s| s.vip == a));
        // Only a name the config accepts (else the default, and --check passes).
        let valid = !ifc.is_empty()
            && ifc.len() <= 15
            && !ifc
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '/');
        if holds_vip && valid {
            return (
                ifc.to_string(),
                format!("from vrrp_instance {} ({})", n.args.join(" "), n.loc),
            );
        }
    }
    (
        "eth0".into(),
        "keepalived's LVS config names no interface: set the director's (or use --interface)".into(),
    )
}

/// Text from the file as one YAML comment line: control characters (a
/// carriage return would end the comment) and Unicode line separators are
/// shown escaped.
fn comment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// An address as a YAML value: IPv6 quoted, since a plain scalar ending in
/// `:` (`2001:db8::`) reads as a mapping key (found by the keepalived fuzz
/// target); IPv4 as it is.
fn yaml_ip(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(_) => yaml_str(&a.to_string()),
    }
}

fn render(y: &mut String, s: &Service) {
    let _ = writeln!(
        y,
        "  # virtual_server {} {} ({})",
        s.vip,
        s.port,
        comment(&s.loc.to_string())
    );
    for c in &s.comments {
        let _ = writeln!(y, "  # {}", comment(c));
    }
    let _ = writeln!(y, "  - name: {}", s.name());
    let _ = writeln!(y, "    vip: {}", yaml_ip(s.vip));
    let _ = writeln!(y, "    port: {}", s.port);
    let _ = writeln!(y, "    protocol: {}", if s.udp { "udp" } else { "tcp" });
    let _ = writeln!(y, "    mode: {}", s.mode);
    let _ = writeln!(
        y,
        "    scheduler: {}",
        if s.client_affinity {
            "maglev-client"
        } else {
            "maglev"
        }
    );
    if let Some(h) = &s.health {
        let _ = writeln!(y, "    health:");
        match &h.http {
            Some((path, status)) => {
                let _ = writeln!(y, "      kind: http");
                let _ = writeln!(y, "      path: {}", yaml_str(path));
                let _ = writeln!(y, "      expect_status: {status}");
            }
            None => {
                let _ = writeln!(y, "      kind: tcp");
            }
        }
        let _ = writeln!(y, "      interval_ms: {}", h.interval_ms);
        let _ = writeln!(y, "      timeout_ms: {}", h.timeout_ms);
        let _ = writeln!(y, "      rise: 1");
        let _ = writeln!(y, "      fall: {}", h.fall);
        if let Some(p) = h.port {
            let _ = writeln!(y, "      port: {p}");
        }
    }
    if s.servers.is_empty() {
        let _ = writeln!(y, "    real_servers: []");
        return;
    }
    let _ = writeln!(y, "    real_servers:");
    for r in &s.servers {
        match r.port {
            Some(p) if s.mode == "nat" => {
                // Quoted: `[` would open a YAML flow sequence.
                let a = std::net::SocketAddr::new(r.addr, p).to_string();
                let _ = writeln!(y, "      - address: {}", yaml_str(&a));
            }
            _ => {
                let _ = writeln!(y, "      - address: {}", yaml_ip(r.addr));
            }
        }
        let _ = writeln!(y, "        weight: {}", r.weight);
    }
}

/// keepalived's forwarding method as a ulvs mode.
fn mode(n: &Node, notes: &mut Notes) -> Option<&'static str> {
    match n.arg(0).map(str::to_ascii_uppercase).as_deref() {
        Some("NAT") => Some("nat"),
        Some("DR") => Some("dr"),
        Some("TUN") => {
            if n.args.len() > 1 {
                notes.not_translated(n, "ulvs tunnels in plain IP-in-IP only; used ipip");
            }
            Some("tun")
        }
        _ => {
            notes.not_translated(n, "ulvs forwards by NAT, DR or TUN; used NAT");
            None
        }
    }
}

fn virtual_server(n: &Node, notes: &mut Notes) -> Option<Service> {
    let what = format!("virtual_server {}", n.args.join(" "));
    match n.arg(0) {
        Some("fwmark") => {
            notes.not_translated(n, "fwmark services: ulvs matches VIP, protocol and port");
            return None;
        }
        Some("group") => {
            notes.not_translated(
                n,
                "virtual_server_group: write one virtual_server (ulvs service) per address",
            );
            return None;
        }
        _ => {}
    }
    let vip = address(n, &what, notes)?;
    let vport = match n.arg(1) {
        None => 0,
        Some(p) => match port(Some(p)) {
            Some(p) => p,
            None => {
                notes.add(&n.loc, format!("{what}: not translated (bad port \"{p}\")"));
                return None;
            }
        },
    };
    let mut s = Service {
        vip,
        port: vport,
        udp: false,
        mode: "nat",
        client_affinity: false,
        comments: Vec::new(),
        health: None,
        servers: Vec::new(),
        loc: n.loc.clone(),
    };
    let mut timers = Timers::default();
    let mut algo: Option<(String, Loc)> = None;
    let mut port_in_hash = false;
    let mut kind_given = false;
    for c in n.children() {
        match c.key.as_str() {
            "lb_kind" | "lvs_method" => {
                kind_given = true;
                if let Some(m) = mode(c, notes) {
                    s.mode = m;
                }
            }
            "protocol" => match c.arg(0).map(str::to_ascii_uppercase).as_deref() {
                Some("TCP") => s.udp = false,
                Some("UDP") => s.udp = true,
                _ => {
                    notes.add(
                        &c.loc,
                        format!(
                            "{what}: not translated (protocol {}: ulvs balances TCP and UDP)",
                            c.args.join(" ")
                        ),
                    );
                    return None;
                }
            },
            "lb_algo" | "lvs_sched" => {
                algo = Some((c.arg(0).unwrap_or("").to_ascii_lowercase(), c.loc.clone()))
            }
            "sh-port" | "mh-port" => port_in_hash = true,
            // ulvs always skips a server that is not up (Maglev's table holds
            // only servers that are).
            "sh-fallback" | "mh-fallback" => {}
            "persistence_timeout" => {
                s.client_affinity = true;
                s.comments.push(format!(
                    "persistence_timeout {} ({}): scheduler maglev-client: a client keeps its server while the set of servers is stable (no timeout)",
                    c.args.join(" "),
                    c.loc
                ));
            }
            "alpha" => s.comments.push(format!(
                "alpha ({}): ulvs always waits for a server's first check before sending it flows",
                c.loc
            )),
            "delay_loop" => timers.delay_loop_ms = secs_ms(c.arg(0)),
            "connect_timeout" => timers.connect_timeout_ms = secs_ms(c.arg(0)),
            "retry" => timers.retry = c.arg(0).and_then(|r| r.parse().ok()),
            "delay_before_retry" => {}
            "real_server" => {}
            "sorry_server" => notes.not_translated(
                c,
                "ulvs has no sorry server; a service with no server up drops and counts",
            ),
            "persistence_granularity" => {
                notes.not_translated(c, "ulvs client affinity is per client address (/32)")
            }
            _ => notes.not_translated(c, "no ulvs counterpart"),
        }
    }
    if !kind_given {
        s.comments.push("no lb_kind: keepalived's default, NAT".into());
    }
    if let Some((a, loc)) = algo {
        match a.as_str() {
            "sh" | "mh" if !port_in_hash => {
                s.client_affinity = true;
                s.comments.push(format!(
                    "lb_algo {a} ({loc}): source hashing is scheduler maglev-client"
                ));
            }
            "rr" | "wrr" | "lc" | "wlc" | "lblc" | "lblcr" | "dh" | "sed" | "nq" | "fo" | "ovf" | "twos"
            | "sh" | "mh" => {
                s.comments.push(format!(
                    "lb_algo {a} ({loc}): ulvs schedules by Maglev consistent hashing (weights kept)"
                ));
            }
            _ => notes.add(
                &loc,
                format!("lb_algo {a}: not translated (unknown scheduler); used Maglev"),
            ),
        }
    }
    for c in n.children().iter().filter(|c| c.key == "real_server") {
        if let Some(r) = real_server(c, &s, timers, notes) {
            if s.servers
                .iter()
                .any(|o| o.addr == r.addr && (s.mode != "nat" || o.port == r.port))
            {
                notes.add(
                    &c.loc,
                    format!("real_server {}: not translated (listed twice)", c.args.join(" ")),
                );
            } else {
                s.servers.push(r);
            }
        }
    }
    s.health = service_health(&mut s, notes);
    if s.health.is_none() && s.servers.iter().any(|r| r.other_check) {
        s.comments
            .push("no health check translated: every server counts as up".into());
    }
    Some(s)
}

/// An address the config accepts (as `control::config` checks it).
fn usable(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
    }
}

fn unusable_why(a: Option<&str>) -> &'static str {
    match a {
        Some(a) if a.parse::<IpAddr>().is_ok() => {
            "not a usable address (unspecified, broadcast, multicast or loopback)"
        }
        _ => "not an IPv4 or IPv6 address",
    }
}

/// The block's first argument as a usable IPv4 or IPv6 address, else a
/// note that `what` was not translated and why.
fn address(n: &Node, what: &str, notes: &mut Notes) -> Option<IpAddr> {
    let addr = n
        .arg(0)
        .and_then(|a| a.parse::<IpAddr>().ok())
        .filter(|a| usable(*a));
    if addr.is_none() {
        let why = unusable_why(n.arg(0));
        notes.add(&n.loc, format!("{what}: not translated ({why})"));
    }
    addr
}

fn real_server(n: &Node, s: &Service, vs_timers: Timers, notes: &mut Notes) -> Option<Server> {
    let what = format!("real_server {}", n.args.join(" "));
    let addr = address(n, &what, notes)?;
    if addr.is_ipv6() != s.vip.is_ipv6() {
        let why = if addr.is_ipv6() {
            "an IPv6 server behind an IPv4 VIP"
        } else {
            "an IPv4 server behind an IPv6 VIP"
        };
        notes.add(
            &n.loc,
            format!("{what}: not translated ({why}: a ulvs service is one family)"),
        );
        return None;
    }
    let rport = match n.arg(1) {
        None => None,
        Some(p) => match port(Some(p)) {
            Some(0) => None,
            Some(p) => Some(p),
            None => {
                notes.add(&n.loc, format!("{what}: not translated (bad port \"{p}\")"));
                return None;
            }
        },
    };
    if let Some(p) = rport {
        if s.mode == "nat" && s.port == 0 {
            notes.add(
                &n.loc,
                format!("{what}: port {p} not translated (a port-0 NAT service keeps each port)"),
            );
        } else if s.mode != "nat" && s.port != 0 && p != s.port {
            notes.add(
                &n.loc,
                format!(
                    "{what}: port {p} not translated ({} cannot change the port: the server receives port {})",
                    s.mode.to_uppercase(),
                    s.port
                ),
            );
        }
    }
    let mut r = Server {
        addr,
        port: rport.filter(|&p| p != s.port && s.port != 0),
        weight: 1,
        inhibit: false,
        check: None,
        other_check: false,
        loc: n.loc.clone(),
    };
    let mut timers = vs_timers;
    for c in n.children() {
        match c.key.as_str() {
            "delay_loop" => timers.delay_loop_ms = secs_ms(c.arg(0)),
            "connect_timeout" => timers.connect_timeout_ms = secs_ms(c.arg(0)),
            "retry" => timers.retry = c.arg(0).and_then(|v| v.parse().ok()),
            _ => {}
        }
    }
    // keepalived probes the real server's own port unless connect_port says.
    let probed = rport.unwrap_or(s.port);
    for c in n.children() {
        match c.key.as_str() {
            "weight" => match c.arg(0).and_then(|w| w.parse::<u64>().ok()) {
                Some(w) if w <= 65535 => r.weight = w as u32,
                _ => notes.not_translated(c, "ulvs weights are 0..=65535; used 1"),
            },
            "inhibit_on_failure" => r.inhibit = !matches!(c.arg(0), Some("false" | "no" | "off")),
            "delay_loop" | "connect_timeout" | "retry" | "delay_before_retry" | "alpha" => {}
            "lvs_method" => {
                if mode(c, notes).is_some_and(|m| m != s.mode) {
                    notes.not_translated(c, "ulvs forwards all servers of a service alike");
                }
            }
            "TCP_CHECK" | "HTTP_GET" => {
                if r.check.is_some() {
                    notes.not_translated(c, "ulvs runs one check per server; the first is used");
                } else if let Some(ch) = checker(c, timers, probed, notes) {
                    r.check = Some((ch, c.loc.clone()));
                }
            }
            "SSL_GET" | "SMTP_CHECK" | "DNS_CHECK" | "MISC_CHECK" | "BFD_CHECK" | "UDP_CHECK"
            | "PING_CHECK" | "FILE_CHECK" => {
                r.other_check = true;
                notes.not_translated(c, "ulvs checks by TCP connect or HTTP GET only");
            }
            _ => notes.not_translated(c, "no ulvs counterpart"),
        }
    }
    Some(r)
}

/// A TCP_CHECK or HTTP_GET block as a ulvs check.
fn checker(n: &Node, mut timers: Timers, probed: u16, notes: &mut Notes) -> Option<Check> {
    let mut http = (n.key == "HTTP_GET").then(|| ("/".to_string(), 200u16));
    let mut connect_port = None;
    let mut urls = 0;
    for c in n.children() {
        match c.key.as_str() {
            "connect_port" => match port(c.arg(0)) {
                Some(p) if p != 0 => connect_port = Some(p),
                _ => notes.not_translated(c, "bad port"),
            },
            "connect_timeout" => timers.connect_timeout_ms = secs_ms(c.arg(0)),
            "retry" | "nb_get_retry" => timers.retry = c.arg(0).and_then(|v| v.parse().ok()),
            "delay_loop" => timers.delay_loop_ms = secs_ms(c.arg(0)),
            "delay_before_retry" | "alpha" | "log_all_failures" => {}
            "url" if http.is_some() => {
                urls += 1;
                if urls > 1 {
                    notes.not_translated(c, "ulvs checks one path; the first url is used");
                    continue;
                }
                url(c, http.as_mut().expect("http"), notes);
            }
            _ => notes.not_translated(c, "no ulvs counterpart"),
        }
    }
    if connect_port.is_none() && probed == 0 {
        notes.add(
            &n.loc,
            format!("{}: not translated (no port to probe: set connect_port)", n.key),
        );
        return None;
    }
    let interval_ms = timers
        .delay_loop_ms
        .unwrap_or(DEFAULT_DELAY_LOOP_MS)
        .clamp(1, MAX_INTERVAL_MS);
    let timeout_ms = timers.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS);
    let retry = timers.retry.unwrap_or(DEFAULT_RETRY);
    Some(Check {
        http,
        port: Some(connect_port.unwrap_or(probed)),
        interval_ms,
        // ulvs wants the probe done before the next one starts.
        timeout_ms: timeout_ms.min(interval_ms),
        fall: retry.saturating_add(1).min(MAX_FALL),
    })
}

fn url(n: &Node, http: &mut (String, u16), notes: &mut Notes) {
    for c in n.children() {
        match c.key.as_str() {
            "path" => match c.arg(0) {
                Some(p)
                    if p.starts_with('/') && !p.contains(|c: char| c.is_whitespace() || c.is_control()) =>
                {
                    http.0 = p.to_string()
                }
                _ => notes.not_translated(c, "ulvs wants a path starting with '/'; used /"),
            },
            "status_code" => match (c.args.as_slice(), c.arg(0).and_then(|v| v.parse::<u16>().ok())) {
                ([_], Some(v)) if (100..=599).contains(&v) => http.1 = v,
                _ => notes.not_translated(c, "ulvs expects one status; used 200"),
            },
            "digest" => notes.not_translated(c, "ulvs checks the status, not the body"),
            _ => notes.not_translated(c, "no ulvs counterpart"),
        }
    }
}

/// The service's one check from its servers' checks. A server whose check
/// differs from the first one's, or that has none while others do, is a
/// note.
fn service_health(s: &mut Service, notes: &mut Notes) -> Option<Check> {
    let (mut h, _) = s.servers.iter().find_map(|r| r.check.clone())?;
    // ulvs probes a server's own port (NAT IP:PORT), else the service's,
    // unless health.port names one for all; keepalived probes connect_port
    // or the server's port (each check's `port` is that one).
    let mode = s.mode;
    let vport = s.port;
    let default_port = |r: &Server| r.port.filter(|_| mode == "nat").unwrap_or(vport);
    let probed = |r: &Server| r.check.as_ref().and_then(|(c, _)| c.port);
    let needs_port = s.port == 0 && s.servers.iter().any(|r| default_port(r) == 0);
    let all_default = s
        .servers
        .iter()
        .all(|r| probed(r).is_none_or(|p| p == default_port(r)));
    h.port = if all_default && !needs_port { None } else { h.port };
    for r in &s.servers {
        match &r.check {
            None => notes.add(
                &r.loc,
                format!(
                    "real_server {}: has no TCP_CHECK or HTTP_GET while others of its service do; ulvs checks it like them",
                    r.addr
                ),
            ),
            Some((c, loc)) => {
                let mut mine = c.clone();
                mine.port = h.port;
                let port_ok = c.port == Some(h.port.unwrap_or(default_port(r)));
                if mine != h || !port_ok {
                    notes.add(
                        loc,
                        format!(
                            "{} of real_server {}: not translated (differs from the service's first check; ulvs checks all servers of a service alike)",
                            if c.http.is_some() { "HTTP_GET" } else { "TCP_CHECK" },
                            r.addr
                        ),
                    );
                }
            }
        }
    }
    if h.timeout_ms == h.interval_ms {
        s.comments
            .push("timeout_ms is at most interval_ms (ulvs finishes a probe before the next)".into());
    }
    s.comments.push(format!(
        "a server goes down after {} failed checks in a row (retry {}) and comes back at the first success",
        h.fall,
        h.fall - 1
    ));
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexing() {
        assert_eq!(
            split_line(r#"  path "/a b" ! comment { "#),
            vec![Tok::Word("path".into()), Tok::Word("/a b".into())]
        );
        assert_eq!(
            split_line("url { path /x }"),
            vec![
                Tok::Word("url".into()),
                Tok::Open,
                Tok::Word("path".into()),
                Tok::Word("/x".into()),
                Tok::Close
            ]
        );
        assert_eq!(split_line("# all comment"), vec![]);
        assert_eq!(
            split_line("digest ab#cd"),
            vec![Tok::Word("digest".into()), Tok::Word("ab#cd".into())]
        );
    }

    #[test]
    fn globbing() {
        assert!(glob(b"*.conf", b"a.conf"));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"**", b""));
        assert!(!glob(b"a", b""));
        // Would take 2^40 steps with naive backtracking.
        let p = "*a".repeat(40) + "b";
        assert!(!glob(p.as_bytes(), "a".repeat(200).as_bytes()));
        assert!(!glob(b"*.conf", b".a.conf"));
        assert!(glob(b"a?c", b"abc"));
        assert!(!glob(b"a?c", b"ac"));
        assert!(glob(b"*", b"x"));
    }

    #[test]
    fn deep_nesting_is_skipped_not_a_crash() {
        let text = format!(
            "virtual_server 1.2.3.4 80 {{\n{}\n{}\n}}\n",
            "a {".repeat(100_000),
            "}".repeat(100_000)
        );
        let mut toks = Vec::new();
        let mut notes = Vec::new();
        lex(
            &text,
            Some(Path::new("k.conf")),
            "k.conf",
            0,
            &mut toks,
            &mut notes,
        );
        let mut pos = 0;
        let tree = block(&toks, &mut pos, None, &mut notes);
        assert_eq!(tree.len(), 1);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].what.contains("nested more than"));
    }

    #[test]
    fn braces_on_their_own_line_and_unbalanced() {
        let text = "virtual_server 1.2.3.4 80\n{\n  lb_kind DR\n}\n}\nreal_server {\n";
        let mut toks = Vec::new();
        let mut notes = Vec::new();
        lex(
            text,
            Some(Path::new("k.conf")),
            "k.conf",
            0,
            &mut toks,
            &mut notes,
        );
        let mut pos = 0;
        let tree = block(&toks, &mut pos, None, &mut notes);
        assert_eq!(tree[0].key, "virtual_server");
        assert_eq!(tree[0].children()[0].key, "lb_kind");
        let lines: Vec<String> = notes.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "k.conf:5: '}' closes no block",
                "k.conf:6: block not closed before the end of the file"
            ]
        );
    }
}
