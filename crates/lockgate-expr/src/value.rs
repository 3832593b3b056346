//! The value model of the expression language (null, boolean, number, string, version, array, object) and the
//! casting rules between its types, as summarised from the Azure Pipelines "Expressions" page (type casting).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// A value produced or consumed by an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// What a dictionary miss returns; there is no literal for it in Azure Pipelines.
    Null,
    /// `true` / `false`.
    Boolean(bool),
    /// A number (Azure Pipelines numbers are decimal; Lockgate uses `f64`).
    Number(f64),
    /// A string; comparisons are ordinal and ignore case.
    String(String),
    /// A version such as `1.2.3` (two to four segments).
    Version(Version),
    /// An ordered list of values.
    Array(Vec<Value>),
    /// A map with ordered keys and case-insensitive lookup.
    Object(Object),
}

/// The type of a [`Value`], named as Azure Pipelines names it in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// [`Value::Null`]
    Null,
    /// [`Value::Boolean`]
    Boolean,
    /// [`Value::Number`]
    Number,
    /// [`Value::String`]
    String,
    /// [`Value::Version`]
    Version,
    /// [`Value::Array`]
    Array,
    /// [`Value::Object`]
    Object,
}

impl ValueKind {
    /// The name used in error messages and conformance vectors (`String`, `Number`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::Null => "Null",
            ValueKind::Boolean => "Boolean",
            ValueKind::Number => "Number",
            ValueKind::String => "String",
            ValueKind::Version => "Version",
            ValueKind::Array => "Array",
            ValueKind::Object => "Object",
        }
    }
}

impl fmt::Display for ValueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Boolean(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Number(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Number(value as f64)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::String(value.to_string())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::String(value)
    }
}

impl From<Version> for Value {
    fn from(value: Version) -> Self {
        Value::Version(value)
    }
}

impl From<Vec<Value>> for Value {
    fn from(value: Vec<Value>) -> Self {
        Value::Array(value)
    }
}

impl From<Object> for Value {
    fn from(value: Object) -> Self {
        Value::Object(value)
    }
}

impl Value {
    /// The type of this value.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Null => ValueKind::Null,
            Value::Boolean(_) => ValueKind::Boolean,
            Value::Number(_) => ValueKind::Number,
            Value::String(_) => ValueKind::String,
            Value::Version(_) => ValueKind::Version,
            Value::Array(_) => ValueKind::Array,
            Value::Object(_) => ValueKind::Object,
        }
    }

    /// Truthiness: null, `false`, `0` (and `-0`, NaN) and `''` are false; everything else (including `'false'`,
    /// `'0'`, versions, arrays and objects) is true.
    pub fn to_bool(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Boolean(b) => *b,
            Value::Number(n) => *n != 0.0 && !n.is_nan(),
            Value::String(s) => !s.is_empty(),
            Value::Version(_) | Value::Array(_) | Value::Object(_) => true,
        }
    }

    /// Casts to a number: null 0, booleans 0/1, strings by the invariant-culture rules ('' is 0); versions,
    /// arrays and objects do not convert.
    pub fn convert_to_number(&self) -> Option<f64> {
        match self {
            Value::Null => Some(0.0),
            Value::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Number(n) => Some(*n),
            Value::String(s) => parse_number_string(s),
            Value::Version(_) | Value::Array(_) | Value::Object(_) => None,
        }
    }

    /// Casts to a string: null '', booleans `True`/`False`, numbers in invariant format, versions as
    /// `major.minor[.build[.revision]]`; arrays and objects do not convert.
    pub fn convert_to_string(&self) -> Option<Cow<'_, str>> {
        match self {
            Value::Null => Some(Cow::Borrowed("")),
            Value::Boolean(true) => Some(Cow::Borrowed("True")),
            Value::Boolean(false) => Some(Cow::Borrowed("False")),
            Value::Number(n) => Some(Cow::Owned(format_number(*n))),
            Value::String(s) => Some(Cow::Borrowed(s)),
            Value::Version(v) => Some(Cow::Owned(v.to_string())),
            Value::Array(_) | Value::Object(_) => None,
        }
    }

    /// Casts to a version: numbers through their string form (`1.2` works, `1` does not), strings by
    /// `Version.TryParse` rules (white space around is allowed); other types do not convert.
    pub fn convert_to_version(&self) -> Option<Version> {
        match self {
            Value::Version(v) => Some(*v),
            Value::Number(n) => Version::parse(&format_number(*n)),
            Value::String(s) => Version::parse(s),
            Value::Null | Value::Boolean(_) | Value::Array(_) | Value::Object(_) => None,
        }
    }

    /// Whether this value casts to null: only null itself and the empty string do.
    pub fn converts_to_null(&self) -> bool {
        matches!(self, Value::Null) || matches!(self, Value::String(s) if s.is_empty())
    }

    /// Renders the value as Azure Pipelines puts it into a string (a variable, an embedded expression):
    /// null as '', booleans as `True`/`False`, numbers in invariant format. Arrays and objects, which Azure
    /// cannot cast to a string, render as compact JSON here.
    pub fn to_display_string(&self) -> String {
        match self.convert_to_string() {
            Some(text) => text.into_owned(),
            None => crate::functions::to_json(self, false),
        }
    }

    /// The string inside a [`Value::String`], if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The object inside a [`Value::Object`], if it is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The items of a [`Value::Array`], if it is one.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Property access by name: object keys are matched ignoring case; anything else yields null.
    pub fn property(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Object(o) => o.get(name),
            _ => None,
        }
    }

    /// Index access as in `a[index]`: an object is indexed by the index cast to string, an array by the index cast to
    /// a number of at least 0, rounded down (`'1'`, `true` and `1.5` are 1); anything else yields `None` (null).
    pub fn index(&self, index: &Value) -> Option<&Value> {
        match self {
            Value::Object(o) => o.get(&index.convert_to_string()?),
            Value::Array(items) => {
                // Any index that converts to a number of at least 0 works, rounded down (`false` and `''` are 0,
                // `'1'` is 1, `1.5` is 1), as in the engine's collection indexer.
                let n = index.convert_to_number()?;
                if n >= 0.0 && n.floor() < items.len() as f64 {
                    items.get(n.floor() as usize)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// A version value: 2 to 4 non-negative 32-bit segments; absent build/revision are -1 as in .NET `System.Version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    major: i32,
    minor: i32,
    build: i32,
    revision: i32,
}

impl Version {
    /// Builds a version; `revision` is ignored when `build` is `None`. Returns `None` for negative segments.
    pub fn new(
        major: i32,
        minor: i32,
        build: Option<i32>,
        revision: Option<i32>,
    ) -> Option<Version> {
        let build_value = build.unwrap_or(-1);
        let revision_value = if build.is_some() {
            revision.unwrap_or(-1)
        } else {
            -1
        };
        if major < 0
            || minor < 0
            || build.is_some_and(|b| b < 0)
            || (build.is_some() && revision.is_some_and(|r| r < 0))
        {
            return None;
        }
        Some(Version {
            major,
            minor,
            build: build_value,
            revision: revision_value,
        })
    }

    /// Parses `major.minor[.build[.revision]]` as .NET `Version.TryParse` does (surrounding white space allowed,
    /// each segment a non-negative integer below 2^31).
    pub fn parse(text: &str) -> Option<Version> {
        let text = text.trim();
        let mut segments = [-1i32; 4];
        let mut count = 0;
        for part in text.split('.') {
            if count == 4 {
                return None;
            }
            let part = part.trim();
            let digits = part.strip_prefix('+').unwrap_or(part);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            segments[count] = digits.parse::<i32>().ok()?;
            count += 1;
        }
        if count < 2 {
            return None;
        }
        Some(Version {
            major: segments[0],
            minor: segments[1],
            build: segments[2],
            revision: segments[3],
        })
    }

    /// The major segment.
    pub fn major(&self) -> i32 {
        self.major
    }

    /// The minor segment.
    pub fn minor(&self) -> i32 {
        self.minor
    }

    /// The build segment, if present.
    pub fn build(&self) -> Option<i32> {
        (self.build >= 0).then_some(self.build)
    }

    /// The revision segment, if present.
    pub fn revision(&self) -> Option<i32> {
        (self.revision >= 0).then_some(self.revision)
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    /// Segment by segment; an absent segment (-1) sorts before any present one, so `1.2 < 1.2.0`.
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.build, self.revision).cmp(&(
            other.major,
            other.minor,
            other.build,
            other.revision,
        ))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if self.build >= 0 {
            write!(f, ".{}", self.build)?;
            if self.revision >= 0 {
                write!(f, ".{}", self.revision)?;
            }
        }
        Ok(())
    }
}

/// FNV-1a: a small, fast hash for the short case-folded names used as keys (variable and property names, which
/// come from the pipeline's own author, so hash flooding is not a concern here).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// A map keyed by case-folded names.
pub(crate) type NameMap<V> = HashMap<String, V, BuildHasherDefault<NameHasher>>;

/// Objects with more keys than this get a hash index for lookups.
const INDEX_THRESHOLD: usize = 12;

/// An object value: keys keep their insertion order and are looked up ignoring case.
#[derive(Debug, Clone, Default)]
pub struct Object {
    entries: Vec<(String, Value)>,
    /// Lower-cased key -> position, built once the object grows past [`INDEX_THRESHOLD`].
    index: Option<NameMap<usize>>,
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Object {
    /// An empty object.
    pub fn new() -> Object {
        Object::default()
    }

    /// Sets `key` to `value`. A key equal ignoring case to an existing one replaces that entry's value in place
    /// (the original spelling and position are kept).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        if let Some(position) = self.position(&key) {
            self.entries[position].1 = value;
            return;
        }
        if let Some(index) = &mut self.index {
            index.insert(fold_case(&key).into_owned(), self.entries.len());
        }
        self.entries.push((key, value));
        if self.index.is_none() && self.entries.len() > INDEX_THRESHOLD {
            self.index = Some(
                self.entries
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (fold_case(k).into_owned(), i))
                    .collect(),
            );
        }
    }

    /// The value of `key`, matched ignoring case.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|position| &self.entries[position].1)
    }

    /// The entry (with the key as stored) for `key`, matched ignoring case.
    pub fn get_entry(&self, key: &str) -> Option<(&str, &Value)> {
        self.position(key).map(|position| {
            let (k, v) = &self.entries[position];
            (k.as_str(), v)
        })
    }

    fn position(&self, key: &str) -> Option<usize> {
        match &self.index {
            Some(index) => with_folded(key, |folded| index.get(folded).copied()),
            None => self
                .entries
                .iter()
                .position(|(k, _)| eq_ignore_case(k, key)),
        }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the object has no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The keys in insertion order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(k, _)| k.as_str())
    }

    /// The values in insertion order.
    pub fn values(&self) -> impl Iterator<Item = &Value> {
        self.entries.iter().map(|(_, v)| v)
    }
}

impl<K: Into<String>> FromIterator<(K, Value)> for Object {
    fn from_iter<T: IntoIterator<Item = (K, Value)>>(iter: T) -> Self {
        let mut object = Object::new();
        for (k, v) in iter {
            object.insert(k, v);
        }
        object
    }
}

impl IntoIterator for Object {
    type Item = (String, Value);
    type IntoIter = std::vec::IntoIter<(String, Value)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// Folds a string for case-insensitive hashing (simple upper-case mapping, as ordinal-ignore-case does).
pub(crate) fn fold_case(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        if text.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(text.to_ascii_uppercase())
        } else {
            Cow::Borrowed(text)
        }
    } else {
        Cow::Owned(text.chars().map(simple_upper).collect())
    }
}

/// Calls `f` with the case-folded form of `key` (as [`fold_case`]) without allocating for short ASCII keys, the
/// usual shape of variable names; used on the lookup path of every evaluation.
pub(crate) fn with_folded<R>(key: &str, f: impl FnOnce(&str) -> R) -> R {
    const SHORT: usize = 96;
    if key.is_ascii() && key.len() <= SHORT {
        let mut buffer = [0u8; SHORT];
        let folded = &mut buffer[..key.len()];
        folded.copy_from_slice(key.as_bytes());
        folded.make_ascii_uppercase();
        // Upper-casing ASCII bytes keeps them ASCII, so this is always valid UTF-8.
        if let Ok(text) = std::str::from_utf8(folded) {
            return f(text);
        }
    }
    f(&fold_case(key))
}

/// One-to-one upper-case mapping of a character (characters whose upper case is several characters stay as they are).
/// The dotless `ı` (U+0131) keeps its case: .NET's ordinal ignore-case comparison does not map it to `I` (a GitHub
/// Actions vector of the same engine lineage, `endsWith('asdf_ı', 'I')`, is false).
fn simple_upper(c: char) -> char {
    if c == '\u{131}' {
        return c;
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// Ordinal, ignore-case string equality.
pub fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    cmp_ignore_case(a, b) == Ordering::Equal
}

/// Ordinal, ignore-case string comparison (both sides upper-cased character by character).
pub fn cmp_ignore_case(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        let ab = a.bytes().map(|c| c.to_ascii_uppercase());
        let bb = b.bytes().map(|c| c.to_ascii_uppercase());
        return ab.cmp(bb);
    }
    a.chars().map(simple_upper).cmp(b.chars().map(simple_upper))
}

/// Parses a string as a number the way the casting rules describe: '' is 0; otherwise optional white space, an
/// optional sign, digits with optional thousands separators (`,`) and an optional decimal part, optional white space.
pub fn parse_number_string(text: &str) -> Option<f64> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return if text.is_empty() { Some(0.0) } else { None };
    }
    let (negative, rest) = match trimmed.as_bytes()[0] {
        b'-' => (true, &trimmed[1..]),
        b'+' => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let (integer, fraction) = match rest.find('.') {
        Some(dot) => (&rest[..dot], Some(&rest[dot + 1..])),
        None => (rest, None),
    };
    // Thousands separators may appear between integer digits but not first.
    if integer.starts_with(',') || !integer.bytes().all(|b| b.is_ascii_digit() || b == b',') {
        return None;
    }
    let fraction = fraction.unwrap_or("");
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: String = integer.chars().filter(|c| *c != ',').collect();
    if digits.is_empty() && fraction.is_empty() {
        return None;
    }
    let normalised = format!(
        "{}{}.{}",
        if negative { "-" } else { "" },
        if digits.is_empty() { "0" } else { &digits },
        if fraction.is_empty() { "0" } else { fraction }
    );
    normalised.parse::<f64>().ok()
}

/// Formats a number as the Azure engine does (.NET custom format `0.#######`, invariant culture): at most seven
/// decimals, rounded; no trailing zeros, no thousands separators, no exponent; `-0` is `0`.
pub fn format_number(n: f64) -> String {
    if n.is_nan() {
        return "NaN".into();
    }
    if n.is_infinite() {
        return if n > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let mut text = format!("{n:.7}");
    if text.contains('.') {
        let trimmed = text.trim_end_matches('0').trim_end_matches('.').len();
        text.truncate(trimmed);
    }
    if text == "-0" {
        text = "0".into();
    }
    text
}
