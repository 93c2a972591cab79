//! Where each field of a config file is written (slow path), so that every
//! problem names its line and field path, and the messages for problems
//! `serde-saphyr` finds.
//!
//! `serde-saphyr` gives the location of a value ([`Spanned`]) and of an
//! error, but not the field path there. [`Places::of`] deserializes the
//! document into a shape-agnostic tree of spanned nodes (by the same parser,
//! so locations agree). The rules ask it where a field path is written; a
//! problem found at a location asks which path starts there (an index built
//! only when a file has problems).

use std::cell::OnceCell;
use std::collections::HashMap;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{Budget, DuplicateKeyPolicy, Location, MessageFormatter, Options, Spanned};

use super::field::{line_of, BadValue, Given, ServiceWritten};
use super::Problem;

/// The parser options of both readings of a file.
pub(super) fn options(max_nodes: usize) -> Options {
    let mut budget = Budget::default();
    budget.max_nodes = max_nodes;
    // Every node is one event, every list and mapping one more at its end.
    budget.max_events = max_nodes.saturating_mul(2);
    let mut options = Options::default();
    options.budget = Some(budget);
    // Messages carry no source snippet: each problem is one line.
    options.with_snippet = false;
    options
}

/// The places of a file, read only when first asked: a valid file's rules
/// find what they need in [`super::field::Written`], so only a file with
/// problems pays for the second, loose reading that places them.
pub(super) struct LazyPlaces<'t> {
    text: &'t str,
    max_nodes: usize,
    places: OnceCell<Places>,
}

impl<'t> LazyPlaces<'t> {
    pub(super) fn new(text: &'t str, max_nodes: usize) -> Self {
        LazyPlaces {
            text,
            max_nodes,
            places: OnceCell::new(),
        }
    }

    /// The places, read now if not yet. The strict reading of the same text
    /// succeeded, so the loose one does too; were it to fail, no field is
    /// placed (problems keep their messages, without line).
    pub(super) fn get(&self) -> &Places {
        self.places
            .get_or_init(|| Places::of(self.text, options(self.max_nodes)).unwrap_or_default())
    }
}

/// (line, column) of a location.
type At = (u64, u64);

fn at(l: &Location) -> At {
    (l.line(), l.column())
}

/// The places of every field of one file: the document as a tree of nodes
/// that know where they are written.
#[derive(Default)]
pub(super) struct Places {
    root: Option<Spanned<Node>>,
    /// Where each value and each mapping key starts -> its field path;
    /// built when a problem first needs it (a valid file never does).
    index: OnceCell<Index>,
    /// The size limit the file was read with, for its message.
    max_nodes: usize,
}

#[derive(Default)]
struct Index {
    values: HashMap<At, String>,
    keys: HashMap<At, String>,
}

impl Index {
    fn add(&mut self, node: &Spanned<Node>, path: &str) {
        self.values
            .entry(at(&node.referenced))
            .or_insert_with(|| path.to_string());
        match &node.value {
            Node::Map(entries) => {
                for (key, value) in entries {
                    let child = if path.is_empty() {
                        key.value.clone()
                    } else {
                        format!("{path}.{}", key.value)
                    };
                    self.keys
                        .entry(at(&key.referenced))
                        .or_insert_with(|| child.clone());
                    self.add(value, &child);
                }
            }
            Node::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.add(item, &format!("{path}[{i}]"));
                }
            }
            Node::Null | Node::Scalar => {}
        }
    }
}

impl Places {
    /// Reads the document loosely (any shape, duplicate keys allowed).
    ///
    /// # Errors
    ///
    /// A YAML syntax error or an exceeded size limit, or a file with no
    /// content: the file's single problem.
    pub(super) fn of(text: &str, mut options: Options) -> Result<Places, Problem> {
        let mut places = Places {
            max_nodes: options.budget.as_ref().map_or(0, |b| b.max_nodes),
            ..Places::default()
        };
        // Keep every entry, so that the strict reading can place its
        // duplicate-key error on the repeated key.
        options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
        TRAIL.with(|t| t.borrow_mut().clear());
        let root: Spanned<Node> = match serde_saphyr::from_str_with_options(text, options) {
            Ok(root) => root,
            Err(e) => {
                // Nothing is placed yet: name the field the reading was in.
                let mut problem = places.serde_problem(&e, text);
                if !is_syntax(&e) {
                    problem.field = TRAIL.with(|t| trail_path(&t.borrow()));
                }
                return Err(problem);
            }
        };
        if matches!(root.value, Node::Null) && !has_content(text) {
            return Err(Problem {
                line: None,
                field: String::new(),
                message: "the file is empty: expected a mapping with `interface` and `services`".to_string(),
            });
        }
        places.root = Some(root);
        Ok(places)
    }

    /// The node at a field path like `services[1].real_servers[0].weight`,
    /// with the line of its key (the first one, if the key is repeated).
    fn find(&self, path: &str) -> Option<(&Spanned<Node>, Option<usize>)> {
        let mut node = self.root.as_ref()?;
        let mut key_line = line_of(&node.referenced);
        for part in path.split('.').filter(|p| !p.is_empty()) {
            let (name, indices) = part.split_once('[').unwrap_or((part, ""));
            if !name.is_empty() {
                let Node::Map(entries) = &node.value else {
                    return None;
                };
                let (key, value) = entries.iter().find(|(k, _)| k.value == name)?;
                node = value;
                key_line = line_of(&key.referenced);
            }
            for index in indices.split('[').filter(|i| !i.is_empty()) {
                let i: usize = index.trim_end_matches(']').parse().ok()?;
                let Node::Seq(items) = &node.value else {
                    return None;
                };
                node = items.get(i)?;
                key_line = line_of(&node.referenced);
            }
        }
        Some((node, key_line))
    }

    /// Whether the field is written with a value other than null.
    pub(super) fn given(&self, path: &str) -> bool {
        self.find(path)
            .is_some_and(|(n, _)| !matches!(n.value, Node::Null))
    }

    /// The line of the field's key (or list item), when written.
    pub(super) fn key_line(&self, path: &str) -> Option<usize> {
        self.find(path).and_then(|(_, line)| line)
    }

    /// The line where the field's value starts, when written.
    pub(super) fn line(&self, path: &str) -> Option<usize> {
        self.find(path).and_then(|(n, _)| line_of(&n.referenced))
    }

    /// What [`super::field::Written`] notes while deserializing, asked of
    /// this reading instead: for a service whose record is missing, and
    /// for the tests, which compare the two.
    #[cfg(test)]
    pub(super) fn written(&self) -> super::field::Written {
        super::field::Written {
            interface: self.given_at("interface"),
            route_table: self.given_at("route_table"),
            sync_listen: self.given_at("sync.listen"),
            services: (0..self.items("services"))
                .map(|i| self.service_written(i))
                .collect(),
        }
    }

    /// The noted fields of `services[i]`.
    pub(super) fn service_written(&self, i: usize) -> ServiceWritten {
        let f = format!("services[{i}]");
        let at = |name: &str| self.given_at(&format!("{f}.{name}"));
        ServiceWritten {
            name: at("name"),
            vip: at("vip"),
            port: at("port"),
            health: at("health"),
            health_kind: at("health.kind"),
            health_timeout_ms: at("health.timeout_ms"),
            addresses: (0..self.items(&format!("{f}.real_servers")))
                .map(|j| at(&format!("real_servers[{j}].address")))
                .collect(),
        }
    }

    /// `Some(line of the value)` when the field is written, not null.
    fn given_at(&self, path: &str) -> Given {
        self.given(path).then(|| self.line(path))
    }

    /// How many items the list at `path` has (0 when it is no list).
    fn items(&self, path: &str) -> usize {
        match self.find(path) {
            Some((
                Spanned {
                    value: Node::Seq(items),
                    ..
                },
                _,
            )) => items.len(),
            _ => 0,
        }
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            let mut index = Index::default();
            if let Some(root) = &self.root {
                index.add(root, "");
            }
            index
        })
    }

    /// The field path of the value starting at `l`, else of the last value
    /// starting on its line before it.
    fn value_at(&self, l: &Location) -> String {
        let values = &self.index().values;
        if let Some(path) = values.get(&at(l)) {
            return path.clone();
        }
        values
            .iter()
            .filter(|((line, column), _)| *line == l.line() && *column <= l.column())
            .max_by_key(|((_, column), _)| *column)
            .map(|(_, path)| path.clone())
            .unwrap_or_default()
    }

    /// A bad value, placed.
    pub(super) fn problem(&self, b: BadValue) -> Problem {
        Problem {
            line: line_of(&b.at),
            field: self.value_at(&b.at),
            message: b.message,
        }
    }

    /// A `serde-saphyr` error as a sentence about the file, placed.
    pub(super) fn serde_problem(&self, err: &serde_saphyr::Error, text: &str) -> Problem {
        use serde_saphyr::Error as E;
        let mut inner = err.without_snippet();
        if let E::AliasError { error, .. } = inner {
            inner = error.without_snippet();
        }
        let location = err.location().filter(|l| l.line() > 0);
        let mut line = location.as_ref().and_then(line_of);
        let mut field = String::new();
        let message = match inner {
            E::ExternalMessage { .. } | E::Eof { .. } => {
                let text = serde_saphyr::DefaultMessageFormatter.format_message(inner);
                format!("YAML syntax error: {}", one_line(&text))
            }
            E::MultipleDocuments { .. } => {
                // The parser points into the second document; the `---`
                // before it is what to remove.
                line = line.map(|l| {
                    (1..=l)
                        .rev()
                        .find(|&n| text.split('\n').nth(n - 1).is_some_and(|t| t.starts_with("---")))
                        .unwrap_or(l)
                });
                "only one YAML document is allowed (remove the `---` separator)".to_string()
            }
            E::Budget { breach, .. } => {
                line = None;
                budget_message(breach, self.max_nodes)
            }
            E::SerdeUnknownField { field: name, .. } => {
                field = location.map(|l| self.key_at(&l, name)).unwrap_or_default();
                let text = serde_saphyr::DefaultMessageFormatter.format_message(inner);
                one_line(&text)
            }
            E::DuplicateMappingKey { key, .. } => {
                field = location
                    .map(|l| self.key_at(&l, key.as_deref().unwrap_or("")))
                    .unwrap_or_default();
                let first = self.key_line(&field).filter(|&f| Some(f) != line);
                match first {
                    Some(first) => format!("duplicate key, first given at line {first}"),
                    None => "duplicate key".to_string(),
                }
            }
            E::Unexpected { expected, .. } if expected.contains("mapping") => {
                field = location.map(|l| self.value_at(&l)).unwrap_or_default();
                "expected a mapping of `key: value` fields here".to_string()
            }
            _ => {
                field = location.map(|l| self.value_at(&l)).unwrap_or_default();
                value_message(inner, location.as_ref().map(|l| written(text, l)))
            }
        };
        Problem { line, field, message }
    }

    /// The field path of the mapping key `name` written at `l`.
    fn key_at(&self, l: &Location, name: &str) -> String {
        if let Some(path) = self.index().keys.get(&at(l)) {
            return path.clone();
        }
        // Not a key we know the place of: name it under the value there.
        let parent = self.value_at(l);
        match (parent.is_empty(), name.is_empty()) {
            (_, true) => parent,
            (true, false) => name.to_string(),
            (false, false) => format!("{parent}.{name}"),
        }
    }
}

/// Any YAML node: its shape, and where its parts are written.
enum Node {
    Null,
    Scalar,
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        loop {
            match seq.next_element() {
                Ok(Some(item)) => items.push(item),
                Ok(None) => return Ok(Node::Seq(items)),
                Err(e) => return Err(on_trail(e, Step::Index(items.len()))),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            match map.next_value() {
                Ok(value) => entries.push((key, value)),
                Err(e) => return Err(on_trail(e, Step::Key(key.value))),
            }
        }
        Ok(Node::Map(entries))
    }
}

/// One step of a field path.
enum Step {
    Key(String),
    Index(usize),
}

thread_local! {
    /// The steps an error of the loose reading passed through on its way
    /// out, innermost first (the visitor of a node cannot know its path).
    static TRAIL: std::cell::RefCell<Vec<Step>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn on_trail<E>(e: E, step: Step) -> E {
    TRAIL.with(|t| t.borrow_mut().push(step));
    e
}

fn trail_path(steps: &[Step]) -> String {
    let mut path = String::new();
    for step in steps.iter().rev() {
        match step {
            Step::Key(k) if path.is_empty() => path.push_str(k),
            Step::Key(k) => {
                path.push('.');
                path.push_str(k);
            }
            Step::Index(i) => path.push_str(&format!("[{i}]")),
        }
    }
    path
}

/// Whether the parser found the text is not YAML (then no field is at fault).
fn is_syntax(e: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error as E;
    let mut inner = e.without_snippet();
    if let E::AliasError { error, .. } = inner {
        inner = error.without_snippet();
    }
    matches!(
        inner,
        E::ExternalMessage { .. } | E::Eof { .. } | E::MultipleDocuments { .. } | E::Budget { .. }
    )
}

/// Text with control characters (the parser's line breaks) made spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whether the text holds anything but blanks and comments.
pub(super) fn has_content(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The source text of the scalar at `l`, for messages.
fn written<'t>(text: &'t str, l: &Location) -> &'t str {
    let span = l.span();
    let start = usize::try_from(span.offset()).unwrap_or(usize::MAX);
    let len = usize::try_from(span.len()).unwrap_or(0);
    text.get(start..start.saturating_add(len))
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
}

/// A sentence about a limit of the parser the file exceeds.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach, max_nodes: usize) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::Nodes { .. } | B::Events { .. } => {
            format!("the config is too large: more than {max_nodes} YAML nodes (values, lists and mappings)")
        }
        B::Depth { depth } => format!("the config nests lists and mappings too deeply ({depth} levels)"),
        B::Aliases { .. } | B::Anchors { .. } => {
            "the config uses too many YAML anchors or aliases (`&name`, `*name`)".to_string()
        }
        B::ScalarBytes { .. } => "the config's values are too long in total (more than 64 MiB)".to_string(),
        B::Documents { .. } => "only one YAML document is allowed".to_string(),
        other => format!("the config exceeds a YAML size limit ({other:?})"),
    }
}

/// A type or value error as a sentence: what was expected, and what is
/// written there (the parser's own wording names Rust types).
fn value_message(err: &serde_saphyr::Error, written: Option<&str>) -> String {
    use serde_saphyr::Error as E;
    // A list or mapping written there is not worth quoting.
    let got = match written {
        Some(w) if !w.is_empty() && !w.starts_with(['[', '{']) => format!(", got `{}`", one_line(w)),
        _ => String::new(),
    };
    match err {
        E::InvalidScalar { ty, .. } => {
            let what = if ty.starts_with(['i', 'u']) {
                "a whole number"
            } else if ty.starts_with('f') {
                "a number"
            } else if ty.starts_with("bool") {
                "true or false"
            } else {
                ty
            };
            format!("expected {what}{got}")
        }
        E::Unexpected { expected, .. } => format!("expected {} here{got}", shape(expected)),
        E::InvalidBooleanStrict { .. } => format!("expected true or false{got}"),
        E::SerdeInvalidType {
            unexpected, expected, ..
        } => format!("expected {}, got {unexpected}", shape(expected)),
        _ => one_line(&serde_saphyr::DefaultMessageFormatter.format_message(err)),
    }
}

/// What the parser expected, in the words of the config.
fn shape(expected: &str) -> &str {
    if expected.contains("mapping") || expected.contains("map") || expected.starts_with("struct") {
        "a mapping of `key: value` fields"
    } else if expected.contains("sequence") {
        "a list"
    } else if expected.contains("scalar") || expected.contains("string") {
        "a single value (not a list or mapping)"
    } else {
        expected
    }
}
