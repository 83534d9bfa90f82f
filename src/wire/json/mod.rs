//! A JSON payload kept as its text and read through views: the one decode of an AMP `j:`
//! argument or a capture's stored `j`.
//!
//! [`Json`] holds the text, validated once by [`scan::validate`] when it enters the program,
//! and builds a `serde_json::Value` tree only when something asks for one ([`Json::value`]:
//! the TUI's detail pane, small request bodies). The timeline reads the dozen fields it
//! needs through [`Node`]s borrowed from the text, found by [`scan`]'s walks: a
//! getMonitorData reply or a `process:event`, whose `pm2_env` carries every environment
//! variable, is skipped over, never built into a tree.

pub(crate) mod pool;
pub(crate) mod scan;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

/// One JSON payload: its text, its tree, or both (whichever was asked for first; the other
/// is made from it on demand).
///
/// Kept small (48 bytes): every AMP argument and stored message holds one, and a message's
/// arguments are moved from the reading thread to the interpreting one. What is given when
/// the payload is made (its text and tape, read from the wire or a capture) is kept in
/// plain fields; what is made later, rarely (a tree, the text of a tree, a tape), is kept
/// behind one pointer. Given values are kept outside a `OnceLock`: `OnceLock::from` sets
/// its value through the lock's synchronisation, which was a twentieth of reading an app
/// output line's record.
pub struct Json {
    /// The text, when given.
    text: Option<Box<str>>,
    /// Where the given text's containers end (see [`scan::Tape`]), when given with it.
    tape: Option<Box<[(u32, u32)]>>,
    /// What was made on demand (or the tree a payload was made from).
    made: OnceLock<Box<Made>>,
}

/// The parts of a [`Json`] made on demand: each is made at most once.
#[derive(Default)]
struct Made {
    /// The text, written from the tree (when none was given).
    text: OnceLock<Box<str>>,
    /// The tape, made by validating the text (when none was given).
    tape: OnceLock<Box<[(u32, u32)]>>,
    tree: OnceLock<Value>,
}

impl Json {
    /// What was made on demand, made empty the first time.
    fn made(&self) -> &Made {
        self.made.get_or_init(Box::default)
    }

    /// The text, given or made (None when neither yet).
    fn text_kept(&self) -> Option<&str> {
        match &self.text {
            Some(t) => Some(t),
            None => self.made.get()?.text.get().map(|t| &**t),
        }
    }

    /// The tree, when made (or given).
    fn tree_kept(&self) -> Option<&Value> {
        self.made.get()?.tree.get()
    }

    /// The tape, given or made.
    fn tape_kept(&self) -> Option<&[(u32, u32)]> {
        match &self.tape {
            Some(t) => Some(t),
            None => self.made.get()?.tape.get().map(|t| &**t),
        }
    }
}

impl Json {
    /// Validate `bytes` as one JSON value, keeping the text (without surrounding
    /// whitespace). None when it is not JSON.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Json> {
        let (text, tape) = scan::validate(bytes).ok()?;
        Some(Json::from_valid(pool::copy(text), Some(tape)))
    }

    /// Validate `bytes` as one JSON value and keep them, in their own buffer, as its text;
    /// when they are not JSON, or have whitespace around the value, they are handed back
    /// (the caller copies what it keeps).
    pub(crate) fn parse_owned(bytes: Vec<u8>) -> Result<Json, Vec<u8>> {
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => return Err(e.into_bytes()),
        };
        let tape = match scan::validate_str(&text) {
            Ok((valid, tape)) if valid.len() == text.len() => tape,
            _ => return Err(text.into_bytes()),
        };
        Ok(Json::from_valid(text.into_boxed_str(), Some(tape)))
    }

    /// Text already validated as one JSON value with no surrounding whitespace, with its
    /// tape when the validation made one (else it is made when a view first needs it).
    pub(crate) fn from_valid(text: Box<str>, tape: Option<scan::Tape>) -> Json {
        Json {
            text: Some(text),
            tape: tape.map(Vec::into_boxed_slice),
            made: OnceLock::new(),
        }
    }

    /// The text with its tape, to walk.
    pub(crate) fn doc(&self) -> scan::Doc<'_> {
        let text = self.text();
        let tape = match &self.tape {
            Some(t) => t,
            None => self.made().tape.get_or_init(|| {
                scan::validate(text.as_bytes())
                    .map(|(_, t)| t)
                    .unwrap_or_default()
                    .into_boxed_slice()
            }),
        };
        scan::Doc::new(text, tape)
    }

    /// The text (compact JSON when it was made from a tree).
    pub(crate) fn text(&self) -> &str {
        match &self.text {
            Some(t) => t,
            None => self.made().text.get_or_init(|| {
                let tree = self.tree_kept().unwrap_or(&Value::Null);
                serde_json::to_string(tree)
                    .expect("a Value always serialises")
                    .into()
            }),
        }
    }

    /// The root of a view of this payload.
    pub(crate) fn node(&self) -> Node<'_> {
        let doc = self.doc();
        Node::new(doc, doc.text())
    }

    /// The tree, built from the text the first time it is asked for. A text too deeply
    /// nested for serde_json's tree (128 levels) reads as null.
    pub(crate) fn value(&self) -> &Value {
        self.made().tree.get_or_init(|| match self.text_kept() {
            Some(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            None => Value::Null,
        })
    }

    /// Replace the text (already validated), with its tape when known: any tree built from
    /// the old one is dropped.
    pub(crate) fn set_valid_text(&mut self, text: String, tape: Option<scan::Tape>) {
        let old = self.text.replace(text.into_boxed_str());
        let made = std::mem::take(&mut self.made)
            .into_inner()
            .and_then(|m| m.text.into_inner());
        if let Some(old) = old.or(made) {
            pool::give(old.into());
        }
        self.tape = tape.map(Vec::into_boxed_slice);
    }
}

impl Json {
    /// The text, when it is kept (not made from a tree on demand).
    pub(crate) fn kept_text(&self) -> Option<&str> {
        self.text_kept()
    }

    /// Give this payload's text buffer back for reuse ([`pool`]) instead of freeing it.
    pub(crate) fn recycle(self) {
        let text = match self.text {
            Some(t) => Some(t),
            None => self.made.into_inner().and_then(|m| m.text.into_inner()),
        };
        if let Some(text) = text {
            pool::give(text.into());
        }
    }
}

impl From<Value> for Json {
    fn from(v: Value) -> Json {
        let made = Made {
            tree: OnceLock::from(v),
            ..Made::default()
        };
        Json {
            text: None,
            tape: None,
            made: OnceLock::from(Box::new(made)),
        }
    }
}

impl Clone for Json {
    fn clone(&self) -> Json {
        match self.text_kept() {
            Some(text) => Json {
                text: Some(text.into()),
                tape: self.tape_kept().map(Into::into),
                made: OnceLock::new(),
            },
            None => Json::from(self.value().clone()),
        }
    }
}

impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        match (self.text_kept(), other.text_kept()) {
            (Some(a), Some(b)) if a == b => true,
            _ => self.value() == other.value(),
        }
    }
}

impl fmt::Display for Json {
    /// The JSON text (as kept: compact when it came from pm2 or a capture).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Json({self})")
    }
}

impl Serialize for Json {
    /// Writes the kept text through unchanged (or the tree, when it was changed), the way
    /// serde_json writes its own `RawValue`.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.text_kept(), self.tree_kept()) {
            (None, Some(tree)) => tree.serialize(s),
            _ => {
                let mut raw = s.serialize_struct(RAW_TOKEN, 1)?;
                raw.serialize_field(RAW_TOKEN, self.text())?;
                raw.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    /// From serde_json's own reader, the text is kept (serde_json hands it over as a raw
    /// value; it is validated again here, cheaply, so a `Json` always holds JSON); through
    /// any other deserializer (serde's buffering for flattened or tagged types), a tree is
    /// built.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Json, M::Error> {
                use serde::de::Error;
                match m.next_key::<Cow<'de, str>>()? {
                    Some(k) if k == RAW_TOKEN => {
                        let text = m.next_value::<AnyStr<'de>>()?.0;
                        Json::parse(text.as_bytes())
                            .ok_or_else(|| M::Error::custom("raw value is not JSON"))
                    }
                    _ => Err(M::Error::custom("expected serde_json's raw value")),
                }
            }
            fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
                Value::deserialize(d).map(Json::from)
            }
        }
        d.deserialize_newtype_struct(RAW_TOKEN, V)
    }
}

/// The name serde_json gives the newtype through which it hands out raw text.
const RAW_TOKEN: &str = "$serde_json::private::RawValue";

/// A string, borrowed from the input when the deserializer lends it.
struct AnyStr<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for AnyStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<AnyStr<'de>, E> {
                Ok(AnyStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<AnyStr<'de>, E> {
                Ok(AnyStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<AnyStr<'de>, E> {
                Ok(AnyStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An object's members in order: each key's text between its quotes (escapes left as
/// they are) and its value's text.
type Members<'a> = Vec<(&'a str, &'a str)>;

/// Whether key text `inner` (between the quotes, escapes as written) is `key`. An escape
/// makes the written text longer than what it stands for, so only a longer text can need
/// unescaping, and only when the object has an escaped key at all (`escapes`).
#[inline]
fn key_is(inner: &str, key: &str, escapes: bool) -> bool {
    match inner.len().cmp(&key.len()) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => inner == key,
        std::cmp::Ordering::Greater => {
            escapes && inner.contains('\\') && scan::unescape_inner(inner) == key
        }
    }
}

/// The text between the quotes of raw key `raw` (as [`scan::Doc::members`] gives it).
#[inline]
fn key_inner(raw: &str) -> &str {
    raw.get(1..raw.len().saturating_sub(1)).unwrap_or("")
}

/// An object's members as [`scan::Doc::members`] finds them (keys without their quotes,
/// so that a lookup compares lengths before anything else), and whether any key has an
/// escape.
#[derive(Clone)]
struct ObjectMembers<'a> {
    members: Members<'a>,
    escapes: bool,
    /// For an object of [`INDEXED_MEMBERS`] members or more without escaped keys (a
    /// `pm2_env`, read for twenty fields): each key's last member, by the key's hash, so
    /// that a lookup does not compare every key. Empty otherwise.
    index: MemberIndex,
}

/// Objects with at least this many members get a [`MemberIndex`].
const INDEXED_MEMBERS: usize = 16;

/// An open-addressing table of an object's keys: a slot holds a member's position plus
/// one (0: empty); a key's slot is found from its hash, then the slots that follow.
#[derive(Clone, Default)]
struct MemberIndex(Box<[u32]>);

impl MemberIndex {
    /// A key's length with its first, middle and last bytes, mixed: enough to tell a
    /// `pm2_env`'s keys apart in a few operations (keys that collide are probed past).
    fn hash(key: &str) -> usize {
        let b = key.as_bytes();
        let x = match b.len() {
            0 => 0,
            n => {
                (n as u64)
                    | u64::from(b[0]) << 16
                    | u64::from(b[n / 2]) << 24
                    | u64::from(b[n - 1]) << 32
            }
        };
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
    }

    /// The index of `members` (keys without escapes); the last member of a name wins.
    fn new(members: &[(&str, &str)]) -> MemberIndex {
        let slots = (members.len() * 2).next_power_of_two();
        let mask = slots - 1;
        let mut table = vec![0u32; slots].into_boxed_slice();
        for (i, (k, _)) in members.iter().enumerate() {
            let mut h = MemberIndex::hash(k) & mask;
            loop {
                match table[h] {
                    0 => break,
                    s if members[s as usize - 1].0 == *k => break,
                    _ => h = (h + 1) & mask,
                }
            }
            table[h] = i as u32 + 1;
        }
        MemberIndex(table)
    }

    /// The position of the last member named `key`; `None` when there is no index or no
    /// such member.
    fn find(&self, members: &[(&str, &str)], key: &str) -> Option<Option<usize>> {
        if self.0.is_empty() {
            return None;
        }
        let mask = self.0.len() - 1;
        let mut h = MemberIndex::hash(key) & mask;
        loop {
            match self.0[h] {
                0 => return Some(None),
                s if members[s as usize - 1].0 == key => return Some(Some(s as usize - 1)),
                _ => h = (h + 1) & mask,
            }
        }
    }
}

/// Keys to read from an object in one walk ([`Node::pick_set_after`]), by their length: a member's
/// key is compared with the few keys of its length only (at most [`KeySet::PER_LENGTH`], all
/// shorter than [`KeySet::MAX_LEN`] bytes: checked when the set is made, at compile time).
pub(crate) struct KeySet<const N: usize> {
    keys: [&'static str; N],
    /// Per length, the positions of the keys of that length, one a byte from the lowest
    /// (`0xff`: no more).
    by_len: [u32; KeySet::<0>::MAX_LEN],
}

impl<const N: usize> KeySet<N> {
    /// Keys are shorter than this.
    const MAX_LEN: usize = 64;
    /// At most this many keys have one length.
    const PER_LENGTH: usize = 4;

    pub(crate) const fn new(keys: [&'static str; N]) -> KeySet<N> {
        assert!(N < 0xff, "too many keys");
        let mut by_len = [u32::MAX; KeySet::<0>::MAX_LEN];
        let mut i = 0;
        while i < N {
            let len = keys[i].len();
            assert!(len < KeySet::<N>::MAX_LEN, "a key too long for a KeySet");
            let mut shift = 0;
            while by_len[len] >> shift & 0xff != 0xff {
                shift += 8;
                assert!(
                    shift < 8 * KeySet::<N>::PER_LENGTH,
                    "too many keys of one length"
                );
            }
            by_len[len] &= !(0xff << shift);
            by_len[len] |= (i as u32) << shift;
            i += 1;
        }
        KeySet { keys, by_len }
    }

    /// The keys, in the order [`Node::pick_set_after`] gives their members.
    pub(crate) fn keys(&self) -> &[&'static str; N] {
        &self.keys
    }

    /// The position of key text `k` (between the quotes, as written) in the set.
    #[inline]
    fn slot(&self, k: &str) -> Option<usize> {
        let candidates = *self.by_len.get(k.len())?;
        for n in 0..KeySet::<N>::PER_LENGTH {
            let j = (candidates >> (8 * n) & 0xff) as usize;
            if j == 0xff {
                return None;
            }
            // Most keys of a `pm2_env` are environment variables: their first byte tells
            // them apart from the set's without a call to compare.
            let key = self.keys[j].as_bytes();
            if key.first() == k.as_bytes().first() && key == k.as_bytes() {
                return Some(j);
            }
        }
        None
    }
}

/// Objects a [`Walks`] remembers, and the longest text it keeps.
const WALKS_KEPT: usize = 2;
const WALK_TEXT_MAX: usize = 1 << 20;

/// The last few objects [`Node::pick_set_after`] read for one [`KeySet`] (the latest first).
pub(crate) struct Walks<const N: usize>(Vec<Walked<N>>);

impl<const N: usize> Walks<N> {
    pub(crate) const fn new() -> Walks<N> {
        Walks(Vec::new())
    }
}

/// What a walk of an object for a [`KeySet`] found: its text, where each member starts (its
/// key's opening quote), and where each key of the set is (its member's number and its
/// value's range), all counted from the object's first byte.
struct Walked<const N: usize> {
    text: String,
    starts: Vec<u32>,
    found: [Option<(u32, u32, u32)>; N],
    /// A key of the set is there more than once: its other members were not kept, so this
    /// object cannot lend its members to the next.
    repeats: bool,
}

/// How many bytes `a` and `b` share at their start (sixteen at a time first).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 16 <= n {
        let x = u128::from_le_bytes(a[i..i + 16].try_into().expect("sixteen bytes"));
        let y = u128::from_le_bytes(b[i..i + 16].try_into().expect("sixteen bytes"));
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 16;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// How many bytes `a` and `b` share at their end (sixteen at a time first).
fn common_suffix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[a.len() - n..], &b[b.len() - n..]);
    let mut i = n;
    while i >= 16 {
        let x = u128::from_le_bytes(a[i - 16..i].try_into().expect("sixteen bytes"));
        let y = u128::from_le_bytes(b[i - 16..i].try_into().expect("sixteen bytes"));
        if x != y {
            return n - i + ((x ^ y).leading_zeros() / 8) as usize;
        }
        i -= 16;
    }
    while i > 0 && a[i - 1] == b[i - 1] {
        i -= 1;
    }
    n - i
}

/// A view of one JSON value inside a payload's validated text: an object's members are
/// found by one walk over its text (kept), scalars are read when asked for.
#[derive(Clone)]
pub struct Node<'a> {
    doc: scan::Doc<'a>,
    raw: &'a str,
    members: std::cell::OnceCell<Option<ObjectMembers<'a>>>,
}

impl<'a> Node<'a> {
    /// A view of the value `raw`, a slice of the validated text `doc`.
    fn new(doc: scan::Doc<'a>, raw: &'a str) -> Node<'a> {
        Node {
            doc,
            raw,
            members: std::cell::OnceCell::new(),
        }
    }

    fn first_byte(&self) -> u8 {
        self.raw.as_bytes().first().copied().unwrap_or(b'n')
    }

    pub(crate) fn is_object(&self) -> bool {
        self.first_byte() == b'{'
    }

    /// An object's members, found once (None for anything else).
    fn object_members(&self) -> Option<&ObjectMembers<'a>> {
        self.members
            .get_or_init(|| {
                self.is_object().then(|| {
                    let members: Members<'a> = self
                        .doc
                        .members(self.raw)
                        .map(|(k, v)| (key_inner(k), v))
                        .collect();
                    // Keys are short: a plain loop, not a search call per key.
                    let escapes = members.iter().any(|(k, _)| k.bytes().any(|c| c == b'\\'));
                    let index = if members.len() >= INDEXED_MEMBERS && !escapes {
                        MemberIndex::new(&members)
                    } else {
                        MemberIndex::default()
                    };
                    ObjectMembers {
                        members,
                        escapes,
                        index,
                    }
                })
            })
            .as_ref()
    }

    /// An object's members (None for anything else).
    fn member_texts(&self) -> Option<&[(&'a str, &'a str)]> {
        self.object_members().map(|o| &o.members[..])
    }

    /// An object's members, in order (None for anything else).
    pub(crate) fn members(&self) -> Option<impl Iterator<Item = (Cow<'a, str>, Node<'a>)> + '_> {
        let doc = self.doc;
        Some(
            self.member_texts()?
                .iter()
                .map(move |&(k, v)| (scan::unescape_inner(k), Node::new(doc, v))),
        )
    }

    /// A member of an object (the last of that name, as in a parsed tree).
    pub(crate) fn get(&self, key: &str) -> Option<Node<'a>> {
        let o = self.object_members()?;
        let v = match o.index.find(&o.members, key) {
            Some(found) => o.members[found?].1,
            None => {
                o.members
                    .iter()
                    .rev()
                    .find(|(k, _)| key_is(k, key, o.escapes))?
                    .1
            }
        };
        Some(Node::new(self.doc, v))
    }

    /// Members `keys` of an object, each the last of its name as [`Node::get`] finds it,
    /// read in one walk that keeps no member list (for an object read once, for a few
    /// members). None when this is not an object or any of its keys has an escape: ask
    /// [`Node::get`] then.
    pub(crate) fn pick<const N: usize>(&self, keys: [&str; N]) -> Option<[Option<Node<'a>>; N]> {
        if !self.is_object() {
            return None;
        }
        let mut found: [Option<&'a str>; N] = [None; N];
        for (k, v) in self.doc.members(self.raw) {
            let k = key_inner(k);
            if let Some(j) = keys.iter().position(|&key| key == k) {
                found[j] = Some(v);
            } else if k.as_bytes().contains(&b'\\') {
                // An escaped key may stand for one of `keys`.
                return None;
            }
        }
        Some(found.map(|v| v.map(|v| Node::new(self.doc, v))))
    }

    /// Members `set` of an object, each the last of its name as [`Node::get`] finds it, read
    /// in one walk that keeps no member list and tells most other keys apart by their length
    /// alone: for a large object read for a dozen of its members (a `pm2_env` of a hundred or
    /// more, read again whenever one of its values changed). An object like one read before
    /// (the next text of an app's `pm2_env`, in which a few values changed) is walked only
    /// where it differs: the members it shares with the most similar of the objects `walks`
    /// remembers, byte for byte at their start and at their end, are taken from that
    /// object's walk. The object is remembered in turn. None when this is not an object or
    /// any of its keys has an escape: ask [`Node::get`] then.
    pub(crate) fn pick_set_after<const N: usize>(
        &self,
        set: &KeySet<N>,
        walks: &mut Walks<N>,
    ) -> Option<[Option<Node<'a>>; N]> {
        if !self.is_object() {
            return None;
        }
        let new = self.raw.as_bytes();
        // The remembered object sharing the most bytes with this one at its two ends.
        let best = walks
            .0
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let old = w.text.as_bytes();
                let p = common_prefix(old, new);
                (i, p, common_suffix(&old[p..], &new[p..]))
            })
            .max_by_key(|&(_, p, s)| p + s);
        let walked = self.walk_set(set, best.map(|(i, p, s)| (&walks.0[i], p, s)));
        let lent = best.map(|(i, ..)| walks.0.remove(i));
        let mut walked = walked?;
        let found = walked
            .found
            .map(|f| f.map(|(_, vs, ve)| Node::new(self.doc, &self.raw[vs as usize..ve as usize])));
        if !walked.repeats && self.raw.len() <= WALK_TEXT_MAX {
            // The text is kept in the buffer of the object it replaces.
            walked.text = lent.map(|w| w.text).unwrap_or_default();
            walked.text.clear();
            walked.text.push_str(self.raw);
            walks.0.truncate(WALKS_KEPT - 1);
            walks.0.insert(0, walked);
        }
        Some(found)
    }

    /// The walk of [`Node::pick_set_after`]: every member, or (`old`: an object read before,
    /// with the number of bytes this one shares with it at its start and at its end) only
    /// the members not inside those bytes. None when a key walked has an escape.
    fn walk_set<const N: usize>(
        &self,
        set: &KeySet<N>,
        old: Option<(&Walked<N>, usize, usize)>,
    ) -> Option<Walked<N>> {
        let new = self.raw;
        let at = self.doc.offset(new);
        // Only an object read without repeated keys of the set can lend its members.
        let old = old.filter(|(w, ..)| !w.repeats);
        // The old members that end inside the shared start, and the one after them, which
        // starts there too (before the first byte that differs): this object has it at the
        // same place, and is walked from it.
        let first_walked = old.and_then(|(w, p, _)| {
            w.starts
                .partition_point(|&st| (st as usize) < p)
                .checked_sub(1)
        });
        let (members, mut starts) = match (old, first_walked) {
            (Some((w, ..)), Some(a)) => (
                self.doc.members_from(new, w.starts[a] as usize),
                w.starts[..a].to_vec(),
            ),
            _ => (self.doc.members(new), Vec::new()),
        };
        let kept_before = starts.len();
        let mut found: [Option<(u32, u32, u32)>; N] = [None; N];
        let mut seen = [0u8; N];
        if let Some((w, ..)) = old {
            for (j, f) in w.found.iter().enumerate() {
                if let Some(f) = f.filter(|f| (f.0 as usize) < kept_before) {
                    found[j] = Some(f);
                    seen[j] += 1;
                }
            }
        }
        // Where the walk meets the old object's members again, inside the shared end (their
        // number there): the rest are the same.
        let mut resumed = None;
        for (k, v) in members {
            let start = self.doc.offset(k) - at;
            if let Some((w, _, s)) = old {
                if start >= new.len() - s {
                    let old_start = start + w.text.len() - new.len();
                    if let Ok(b) = w.starts.binary_search(&(old_start as u32)) {
                        resumed = Some(b);
                        break;
                    }
                }
            }
            let number = starts.len() as u32;
            starts.push(start as u32);
            let key = key_inner(k);
            if let Some(j) = set.slot(key) {
                let vs = (self.doc.offset(v) - at) as u32;
                found[j] = Some((number, vs, vs + v.len() as u32));
                seen[j] = seen[j].saturating_add(1);
            } else if key.bytes().fold(false, |any, c| any | (c == b'\\')) {
                return None;
            }
        }
        if let (Some((w, ..)), Some(b)) = (old, resumed) {
            let shift = |x: u32| (x as usize + new.len() - w.text.len()) as u32;
            let renumber = starts.len() as u32;
            for (j, f) in w.found.iter().enumerate() {
                if let Some((n, vs, ve)) = f.filter(|f| f.0 as usize >= b) {
                    found[j] = Some((renumber + n - b as u32, shift(vs), shift(ve)));
                    seen[j] = seen[j].saturating_add(1);
                }
            }
            starts.extend(w.starts[b..].iter().map(|&st| shift(st)));
        }
        Some(Walked {
            text: String::new(),
            starts,
            found,
            repeats: seen.iter().any(|&n| n > 1),
        })
    }

    /// An array's items (None for anything else).
    pub(crate) fn items(&self) -> Option<Vec<Node<'a>>> {
        if self.first_byte() != b'[' {
            return None;
        }
        Some(
            self.doc
                .items(self.raw)
                .map(|v| Node::new(self.doc, v))
                .collect(),
        )
    }

    /// A string's content (None for anything else).
    pub(crate) fn as_str(&self) -> Option<Cow<'a, str>> {
        (self.first_byte() == b'"').then(|| scan::unescape(self.raw))
    }

    /// A string, number, boolean or null as a tree (None for objects and arrays).
    pub(crate) fn scalar(&self) -> Option<Value> {
        match self.first_byte() {
            b'{' | b'[' => None,
            b'"' => Some(Value::String(scan::unescape(self.raw).into_owned())),
            // A whole number that fits (pids, times, counts): the value serde_json gives it.
            _ => match scan::plain_u64(self.raw) {
                Some(n) => Some(Value::from(n)),
                None => serde_json::from_str(self.raw).ok(),
            },
        }
    }

    /// This value as a payload of its own: its text and its part of the tape copied, no
    /// tree built.
    pub(crate) fn to_json(&self) -> Json {
        Json::from_valid(self.raw.into(), Some(self.doc.tape_of(self.raw)))
    }

    /// The value as a tree (for the few places that keep a payload whole).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.raw).unwrap_or(Value::Null)
    }

    /// A string's content, anything else as compact JSON: what pm2 would put in the
    /// environment or print.
    pub(crate) fn text(&self) -> String {
        match self.as_str() {
            Some(s) => s.into_owned(),
            None => match self.scalar() {
                Some(v) => v.to_string(),
                None => self.value().to_string(),
            },
        }
    }
}

impl<'a> Node<'a> {
    /// The value's JSON text (what a reader compares to tell that a value repeats).
    pub(crate) fn raw(&self) -> &'a str {
        self.raw
    }
}

impl fmt::Debug for Node<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Node({})", self.raw)
    }
}

impl PartialEq for Node<'_> {
    fn eq(&self, other: &Node<'_>) -> bool {
        self.value() == other.value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn views_read_the_text_as_a_tree_would() {
        let j = Json::parse(br#"{"a": {"b": "x\"y", "n": 1.5}, "a2": [1, "s", {}], "d": 1, "d": 2, "e\u0041": null}"#).unwrap();
        let n = j.node();
        assert!(n.is_object());
        assert_eq!(
            n.get("a").unwrap().get("b").unwrap().as_str().unwrap(),
            "x\"y"
        );
        assert_eq!(
            n.get("a").unwrap().get("n").unwrap().scalar(),
            Some(json!(1.5))
        );
        // Numbers read as serde_json reads them, whole ones in place.
        for raw in [
            "0",
            "7",
            "1234567890123456789",
            "18446744073709551615",
            "18446744073709551616",
            "-1",
            "-0",
            "1.0",
            "1e3",
            "12345678901234567890123",
            "true",
            "false",
            "null",
        ] {
            let j = Json::parse(raw.as_bytes()).unwrap();
            let want: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(j.node().scalar(), Some(want.clone()), "{raw}");
            assert_eq!(
                j.node().scalar().map(|v| v.to_string()),
                Some(want.to_string()),
                "{raw}"
            );
        }
        assert_eq!(
            n.get("d").unwrap().scalar(),
            Some(json!(2)),
            "the last duplicate wins"
        );
        assert_eq!(
            n.get("eA").unwrap().scalar(),
            Some(Value::Null),
            "escaped keys are read"
        );
        let items = n.get("a2").unwrap().items().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].text(), "s");
        assert_eq!(items[0].text(), "1");
        assert_eq!(items[2].text(), "{}");
        assert!(n.get("missing").is_none());
        assert!(
            n.get("a2").unwrap().get("x").is_none(),
            "an array has no members"
        );
        assert_eq!(j.value()["a"]["b"], "x\"y");
    }

    /// Large objects are read through their index: every key, a repeated one (the last
    /// wins), a missing one and keys that share length and outer bytes read as a tree does;
    /// with an escaped key the object is read without an index, the same.
    #[test]
    fn large_objects_read_as_a_tree_would() {
        for escaped in [false, true] {
            let mut text = String::from("{");
            for i in 0..40 {
                text.push_str(&format!(r#""k{i}x":{i},"#));
            }
            text.push_str(r#""k1x":"again","ab":1,"aab":2,"abb":3,"a_b":4,"a":5,"":6"#);
            if escaped {
                text.push_str(r#","eA":7"#);
            }
            text.push('}');
            let j = Json::parse(text.as_bytes()).unwrap();
            let n = j.node();
            let tree = j.value().as_object().unwrap().clone();
            for (k, v) in &tree {
                assert_eq!(n.get(k).map(|x| x.value()).as_ref(), Some(v), "{k}");
            }
            assert_eq!(n.get("k1x").unwrap().value(), json!("again"));
            for missing in ["k40x", "k1", "b", "aaa", "k1x ", "eA\\"] {
                assert!(n.get(missing).is_none(), "{missing}");
            }
            assert_eq!(n.get("eA").is_some(), escaped);
            assert_eq!(n.members().unwrap().count(), tree.len() + 1);
        }
    }

    /// A set of keys read in one walk gives each key's member as a lookup by name does (the
    /// last of a name wins; nested objects' members are not the object's), also for keys
    /// that share a length with many others or with none of the set's, keys too long for the
    /// set and non-objects; with an escaped key anywhere the walk declines.
    #[test]
    fn pick_set_reads_as_get_would() {
        const SET: KeySet<9> = KeySet::new([
            "status",
            "pm_cwd",
            "signal",
            "ab",
            "ba",
            "",
            "x",
            "kill_timeout",
            "env",
        ]);
        let texts = [
            r#"{"status":"online","pm_cwd":"/srv","signal":null,"ab":1,"ba":2,"":3,"x":{"status":"inner"},"kill_timeout":1600,"env":{"A":"1"}}"#,
            r#"{"STATUS":"no","status":"a","status":"b","PM_CWD":"/x","aa":1,"bb":2,"abc":3,"kill_timeouts":4,"kill_timeoux":5}"#,
            r#"{"x":[{"ab":1}],"envy":2,"en":3,"e":4,"ab":"last","ab":"lasting"}"#,
            r#"{"a_key_much_longer_than_sixty_three_bytes_that_no_key_set_can_hold_at_all":1,"ab":7}"#,
            r#"{}"#,
            r#"{"a":"back\\slash \"quoted\"","ab":"\u00e9"}"#,
        ];
        for t in texts {
            let j = Json::parse(t.as_bytes()).unwrap();
            let n = j.node();
            let picked = n.pick_set_after(&SET, &mut Walks::new()).expect("walked");
            for (key, got) in SET.keys().iter().zip(&picked) {
                let want = n.get(key);
                assert_eq!(
                    got.as_ref().map(Node::raw),
                    want.as_ref().map(Node::raw),
                    "{key} in {t}"
                );
            }
        }
        for declined in [
            r#"{"st\u0061tus":1}"#,
            r#"{"ab":1,"\n":2}"#,
            "[1]",
            "7",
            r#""ab""#,
        ] {
            let j = Json::parse(declined.as_bytes()).unwrap();
            assert!(
                j.node().pick_set_after(&SET, &mut Walks::new()).is_none(),
                "{declined}"
            );
        }
    }

    /// Objects read one after the other, each walked only where it differs from the ones
    /// read before, give each key's member as a lookup by name does: values changed (longer,
    /// shorter, to and from containers) at the start, middle and end, members added,
    /// removed, moved, repeated (also a key of the set) and escaped, whitespace around
    /// members, texts alternating, empty objects and non-objects between.
    #[test]
    fn pick_set_after_objects_read_before_reads_as_get_would() {
        const SET: KeySet<6> = KeySet::new(["status", "pm_id", "env", "a", "watch", "name"]);
        let keys = [
            "status",
            "pm_id",
            "env",
            "a",
            "watch",
            "name",
            "PATH",
            "HOME",
            "b",
            "stat",
            "x_y",
            "st\\u0061tus",
        ];
        let values = [
            "1",
            "22",
            "\"s\"",
            "\"longer, with a comma\"",
            "{\"status\":3}",
            "[1,{\"a\":2}]",
            "null",
            "-1.5",
            "\"\\\"q\\\"\"",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut members: Vec<(usize, usize)> = (0..30).map(|i| (6 + i % 5, i % 8)).collect();
        members.extend([(0, 0), (1, 1), (2, 4), (3, 2), (4, 5), (5, 3)]);
        let mut walks = Walks::new();
        let (mut taken, mut lent, mut texts) = (0, 0, Vec::new());
        for round in 0..3000 {
            match next(10) {
                0 | 1 | 2 => {
                    let i = next(members.len().max(1));
                    if let Some(m) = members.get_mut(i) {
                        m.1 = next(values.len());
                    }
                }
                3 => {
                    // Mostly keys not in the set; now and then one of the set's again.
                    let key = if next(10) == 0 { next(6) } else { 6 + next(5) };
                    let at = next(members.len() + 1);
                    members.insert(at, (key, next(values.len())));
                }
                7 => {
                    // Repeated keys of the set removed (the last one kept).
                    let mut seen = Vec::new();
                    for i in (0..members.len()).rev() {
                        if members[i].0 < 6 {
                            if seen.contains(&members[i].0) {
                                members.remove(i);
                            } else {
                                seen.push(members[i].0);
                            }
                        }
                    }
                }
                4 if !members.is_empty() => {
                    members.remove(next(members.len()));
                }
                5 if members.len() > 1 => {
                    let (i, j) = (next(members.len()), next(members.len()));
                    members.swap(i, j);
                }
                6 if next(4) == 0 => {
                    let at = next(members.len() + 1);
                    members.insert(at, (keys.len() - 1, next(values.len())));
                }
                6 => members.retain(|m| m.0 != keys.len() - 1),
                _ => {}
            }
            let spaced = next(5) == 0;
            let text = format!(
                "{{{}}}",
                members
                    .iter()
                    .map(|&(k, v)| if spaced {
                        let pad = " ".repeat(next(3));
                        format!("{pad} \"{}\" : {} ", keys[k], values[v])
                    } else {
                        format!("\"{}\":{}", keys[k], values[v])
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            );
            texts.push(text.clone());
            // Now and then an older text again, an empty object or not an object at all.
            let text = match next(20) {
                0 => texts[next(texts.len())].clone(),
                1 => "{}".to_owned(),
                2 => "[1]".to_owned(),
                _ => text,
            };
            let j = Json::parse(text.as_bytes()).expect(&text);
            let n = j.node();
            let picked = n.pick_set_after(&SET, &mut walks);
            let escaped = text.contains("st\\u0061tus");
            match picked {
                Some(picked) => {
                    assert!(!escaped && n.is_object(), "round {round}: {text}");
                    for (key, got) in SET.keys().iter().zip(&picked) {
                        let want = n.get(key);
                        assert_eq!(
                            got.as_ref().map(Node::raw),
                            want.as_ref().map(Node::raw),
                            "round {round}: {key} in {text}"
                        );
                    }
                    taken += 1;
                    let repeats = SET
                        .keys()
                        .iter()
                        .any(|k| n.members().unwrap().filter(|(m, _)| m == k).count() > 1);
                    // Remembered for the next, unless a key of the set repeats.
                    assert_eq!(
                        walks.0.first().is_some_and(|w| w.text == text),
                        !repeats,
                        "round {round}: {text}"
                    );
                    lent += usize::from(!repeats);
                }
                None => assert!(escaped || !n.is_object(), "round {round}: {text}"),
            }
        }
        assert!(
            taken > 1000 && lent > 1000,
            "{taken} read, {lent} remembered"
        );
    }

    /// A key set holds at most four keys of one length.
    #[test]
    #[should_panic(expected = "too many keys of one length")]
    fn a_key_set_refuses_five_keys_of_one_length() {
        KeySet::new(["a", "b", "c", "d", "e"]);
    }

    /// Whatever is asked first (text, tree, tape, a clone, the serialized form, a new
    /// text), the others are made from it and agree: for payloads given as text (with and
    /// without their tape) and as trees.
    #[test]
    fn made_parts_agree_with_given_ones() {
        let text = r#"{"a":[1,{"b":"x\"y"}],"c":null,"d":{"e":1.5,"f":"long enough to be taped"}}"#;
        let tree: Value = serde_json::from_str(text).unwrap();
        let makers: [fn(&str, &Value) -> Json; 3] = [
            |t, _| Json::parse(t.as_bytes()).unwrap(),
            |t, _| Json::from_valid(t.into(), None),
            |_, v| Json::from(v.clone()),
        ];
        for make in makers {
            // Each part asked first, then the others.
            for first in 0..5 {
                let j = make(text, &tree);
                match first {
                    0 => assert_eq!(j.text(), text),
                    1 => assert_eq!(j.value(), &tree),
                    2 => assert_eq!(
                        j.node().get("d").unwrap().get("e").unwrap().scalar(),
                        Some(serde_json::json!(1.5))
                    ),
                    3 => assert_eq!(j.clone(), j),
                    _ => assert_eq!(serde_json::to_string(&j).unwrap(), text),
                }
                assert_eq!(j.text(), text);
                assert_eq!(j.kept_text(), Some(text));
                assert_eq!(j.value(), &tree);
                let doc = j.doc();
                assert_eq!(
                    doc.tape_of(doc.text()),
                    scan::validate(text.as_bytes()).unwrap().1
                );
                let c = j.clone();
                assert_eq!(c.text(), text);
                assert_eq!(c.value(), &tree);
                assert_eq!(serde_json::to_string(&c).unwrap(), text);
                let mut changed = j.clone();
                let (t2, tape2) = scan::validate(br#"{"z":[2]}"#).unwrap();
                changed.set_valid_text(t2.to_owned(), Some(tape2));
                assert_eq!(changed.text(), r#"{"z":[2]}"#);
                assert_eq!(changed.value(), &serde_json::json!({"z": [2]}));
                assert_eq!(changed.node().get("z").unwrap().items().unwrap().len(), 1);
                j.recycle();
            }
        }
        // A tree not yet written out has no kept text; written once, it is kept.
        let j = Json::from(tree.clone());
        assert_eq!(serde_json::to_string(&j).unwrap(), text);
        assert_eq!(j.kept_text(), None);
        let _ = j.text();
        assert_eq!(j.kept_text(), Some(text));
    }

    #[test]
    fn text_kept_until_changed() {
        let text = r#"{"z":1,"a":[true,null]}"#;
        let mut j = Json::parse(text.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&j).unwrap(), text);
        assert_eq!(j.to_string(), text);
        assert_eq!(j.value()["z"], json!(1));
        j.set_valid_text(r#"{"z":2,"a":[true,null]}"#.into(), None);
        assert_eq!(
            serde_json::to_string(&j).unwrap(),
            r#"{"z":2,"a":[true,null]}"#
        );
        assert_eq!(j.node().get("z").unwrap().scalar(), Some(json!(2)));
        let from_tree = Json::from(json!({"k": "v"}));
        assert_eq!(from_tree.to_string(), r#"{"k":"v"}"#);
        assert_eq!(from_tree, Json::parse(br#"{ "k" : "v" }"#).unwrap());
        assert!(Json::parse(b"{oops").is_none());
    }
}
