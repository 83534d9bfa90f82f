//! A record's members read in place from its validated text and typed without serde: by
//! name in any order ([`Fields`]), or in the order pm2-trace writes them ([`InOrder`]: each
//! key compared where the next member starts, nothing walked twice or looked up); and the
//! values, each taken as written or, when it is not written plainly, given to serde from
//! its own text, which is what serde's derived decoding of the record does with it.

use crate::event::WireMessage;
use crate::wire::amp::Arg;
use crate::wire::json::scan::{plain_u64, Doc};
use crate::wire::json::Json;
use serde::de::DeserializeOwned;
use std::borrow::Cow;

/// Most members a record (or an object in one) read by name has (pm2-trace writes at most 11); a
/// record with more takes serde's path.
const MAX_FIELDS: usize = 16;

/// A record's top-level members, read from its validated text (kept in place: no
/// allocation per record).
pub(super) struct Fields<'a> {
    doc: Doc<'a>,
    members: [(&'a str, &'a str); MAX_FIELDS],
    len: usize,
}

impl<'a> Fields<'a> {
    /// No members yet: [`Fields::read`] finds them. Made where it is used and filled in
    /// place (a record's fields are read once per record: moving them would copy them).
    pub(super) fn new(doc: Doc<'a>) -> Fields<'a> {
        Fields {
            doc,
            members: [("", ""); MAX_FIELDS],
            len: 0,
        }
    }

    /// Find the members of the object `text` (validated); false when it is not an object,
    /// has more than [`MAX_FIELDS`] members, or a key repeats or is escaped (serde's derived
    /// decoding decides those).
    pub(super) fn read(&mut self, text: &'a str) -> bool {
        if !text.starts_with('{') {
            return false;
        }
        for (k, v) in self.doc.members(text) {
            let Some(k) = k.get(1..k.len() - 1) else {
                return false;
            };
            if self.len == MAX_FIELDS || k.bytes().any(|c| c == b'\\') || self.raw(k).is_some() {
                return false;
            }
            self.members[self.len] = (k, v);
            self.len += 1;
        }
        true
    }

    /// The document the members are read from.
    pub(super) fn doc(&self) -> Doc<'a> {
        self.doc
    }

    pub(super) fn raw(&self, name: &str) -> Option<&'a str> {
        self.members[..self.len]
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// Field `name`, a string.
    pub(super) fn str(&self, name: &str) -> Option<Cow<'a, str>> {
        plain_str(self.raw(name)?)
    }
}

/// The JSON string `raw` (validated text): borrowed when it has no escape. None when it is
/// not a string.
pub(super) fn plain_str(raw: &str) -> Option<Cow<'_, str>> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Some(Cow::Borrowed(inner)),
        Some(_) => serde_json::from_str::<String>(raw).ok().map(Cow::Owned),
        None => None,
    }
}

/// A stored AMP message (`[{"j": ...}, {"s": "..."}, {"b64": "..."}]`): JSON arguments
/// keep their validated text, without a second pass.
pub(super) fn msg<'a>(doc: Doc<'a>, raw: Option<&'a str>) -> Option<WireMessage> {
    let text = raw?;
    if !text.starts_with('[') {
        return None;
    }
    // Most messages have two arguments (a bus event's name and payload; a request's).
    let mut args = Vec::with_capacity(2);
    // As pm2-trace writes them (compact), the items are read from their bytes; else
    // each is walked.
    let mut compact = true;
    for member in doc.single_members(text) {
        match member {
            Ok((key, value)) => args.push(arg(doc, key, value)?),
            Err(()) => {
                compact = false;
                break;
            }
        }
    }
    if !compact {
        args.clear();
        for item in doc.items(text) {
            if !item.starts_with('{') {
                return None;
            }
            let mut members = doc.members(item);
            let (Some((key, value)), None) = (members.next(), members.next()) else {
                return None;
            };
            args.push(arg(doc, key, value)?);
        }
    }
    Some(WireMessage(crate::wire::amp::Message::new(args)))
}

/// One argument of a stored message, from its item's one member: `{"j": ...}`,
/// `{"s": ...}` or `{"b64": ...}` (pm2-trace writes no other; serde decides anything
/// else). `key` is the member's key with its quotes.
fn arg<'a>(doc: Doc<'a>, key: &str, value: &'a str) -> Option<Arg> {
    Some(match key {
        r#""j""# => Arg::Json(Json::from_valid(value.into(), Some(doc.tape_of(value)))),
        r#""s""# => Arg::Str(plain_str(value)?.into_owned()),
        r#""b64""# => {
            use base64::Engine;
            let b64 = plain_str(value)?;
            Arg::Raw(
                base64::engine::general_purpose::STANDARD
                    .decode(&*b64)
                    .ok()?,
            )
        }
        _ => return None,
    })
}

/// Where a type's reading finds its members.
pub(super) trait Members<'a> {
    /// Member `name`'s value text; None when it is absent (for [`InOrder`]: when it is not
    /// the next member).
    fn take(&mut self, name: &str) -> Option<&'a str>;
    /// The document the values are slices of.
    fn doc(&self) -> Doc<'a>;
    /// The members not taken are read otherwise (from the whole text).
    fn take_rest(&mut self) {}
}

/// Members found by name, in any order.
impl<'a> Members<'a> for &Fields<'a> {
    fn take(&mut self, name: &str) -> Option<&'a str> {
        self.raw(name)
    }
    fn doc(&self) -> Doc<'a> {
        Fields::doc(self)
    }
}

/// The members of an object written compactly, read in the order they are asked for. When
/// every member was taken in turn and the object ends there ([`InOrder::finished`]), no key
/// is repeated, unknown or escaped: what was read is what a search by name finds.
pub(super) struct InOrder<'a> {
    doc: Doc<'a>,
    /// Where the next member (or the comma before it) starts.
    i: usize,
    /// Where the object's closing brace is.
    end: usize,
    first: bool,
}

impl<'a> InOrder<'a> {
    /// The members of object `raw`, a slice of `doc`'s text.
    pub(super) fn new(doc: Doc<'a>, raw: &'a str) -> Option<InOrder<'a>> {
        if !raw.starts_with('{') || !raw.ends_with('}') {
            return None;
        }
        let at = doc.offset(raw);
        Some(InOrder {
            doc,
            i: at + 1,
            end: at + raw.len() - 1,
            first: true,
        })
    }

    /// Whether every member was taken.
    pub(super) fn finished(&self) -> bool {
        self.i == self.end
    }
}

impl<'a> Members<'a> for InOrder<'a> {
    fn take_rest(&mut self) {
        self.i = self.end;
    }

    fn take(&mut self, name: &str) -> Option<&'a str> {
        let text = self.doc.text();
        let b = text.as_bytes();
        let mut i = self.i;
        if !self.first {
            if b.get(i) != Some(&b',') {
                return None;
            }
            i += 1;
        }
        let k = name.as_bytes();
        let key_end = i + 1 + k.len();
        if b.get(i) != Some(&b'"')
            || b.get(i + 1..key_end) != Some(k)
            || b.get(key_end..key_end + 2) != Some(b"\":")
        {
            return None;
        }
        let v = key_end + 2;
        let v_end = self.doc.skip(v);
        if v_end > self.end {
            return None;
        }
        let value = text.get(v..v_end)?;
        self.i = v_end;
        self.first = false;
        Some(value)
    }
    fn doc(&self) -> Doc<'a> {
        self.doc
    }
}

// ---- Values, from their text. An absent member reads as `null`, as serde's derive reads
// a missing field (None for an optional one, an error otherwise).

pub(super) fn or_null(raw: Option<&str>) -> &str {
    raw.unwrap_or("null")
}

/// Serde's reading of value text `raw`.
pub(super) fn serde<T: DeserializeOwned>(raw: &str) -> Option<T> {
    serde_json::from_str(raw).ok()
}

/// An object read by `read` from its members (in order, else by name), else by serde.
pub(super) fn object<'a, T: DeserializeOwned>(
    doc: Doc<'a>,
    raw: Option<&'a str>,
    read: fn(&mut dyn Members<'a>) -> Option<T>,
) -> Option<T> {
    let raw = or_null(raw);
    if let Some(mut m) = InOrder::new(doc, raw) {
        if let Some(v) = read(&mut m) {
            if m.finished() {
                return Some(v);
            }
        }
        let mut f = Fields::new(doc);
        if f.read(raw) {
            if let Some(v) = read(&mut &f) {
                return Some(v);
            }
        }
    }
    serde(raw)
}

/// A value that may be null (absent is null), else read by `read`.
pub(super) fn opt<T>(raw: Option<&str>, read: impl FnOnce(&str) -> Option<T>) -> Option<Option<T>> {
    match raw {
        None | Some("null") => Some(None),
        Some(r) => read(r).map(Some),
    }
}

/// An array whose items `item` reads; serde reads the whole when `item` declines one.
pub(super) fn list<'a, T: DeserializeOwned>(
    doc: Doc<'a>,
    raw: Option<&'a str>,
    item: impl Fn(&'a str) -> Option<T>,
) -> Option<Vec<T>> {
    let raw = or_null(raw);
    if raw.starts_with('[') {
        if let Some(v) = doc.items(raw).map(item).collect::<Option<Vec<T>>>() {
            return Some(v);
        }
    }
    serde(raw)
}

/// A string (unescaped by serde when it has escapes).
pub(super) fn string(raw: &str) -> Option<String> {
    match plain_str(raw) {
        Some(s) => Some(s.into_owned()),
        None => serde(raw),
    }
}

/// A `u64`.
pub(super) fn whole(raw: &str) -> Option<u64> {
    plain_u64(raw).or_else(|| serde(raw))
}

/// An `i32` (absent is null, which is not one).
pub(super) fn int32(raw: Option<&str>) -> Option<i32> {
    let raw = or_null(raw);
    plain_i32(raw).or_else(|| serde(raw))
}

pub(super) fn boolean(raw: &str) -> Option<bool> {
    match raw {
        "true" => Some(true),
        "false" => Some(false),
        _ => serde(raw),
    }
}

/// A unit variant of an enum, named by a string `variant` knows.
pub(super) fn unit<T: DeserializeOwned>(
    raw: &str,
    variant: impl Fn(&str) -> Option<T>,
) -> Option<T> {
    match plain_str(raw).as_deref().and_then(variant) {
        Some(v) => Some(v),
        None => serde(raw),
    }
}

/// `raw` when it is a whole number in `i32`'s range written plainly (`-` and digits, not
/// `-0`, which serde_json reads as a float); None otherwise.
fn plain_i32(raw: &str) -> Option<i32> {
    match raw.strip_prefix('-') {
        Some(digits) if !digits.starts_with('0') => {
            i32::try_from(-i64::try_from(plain_u64(digits)?).ok()?).ok()
        }
        Some(_) => None,
        None => i32::try_from(plain_u64(raw)?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_i32_reads_as_serde_json_does() {
        for raw in [
            "0",
            "-0",
            "7",
            "-7",
            "2147483647",
            "2147483648",
            "-2147483648",
            "-2147483649",
            "99999999999999999999",
            "1.0",
            "1e3",
            "-",
            "",
            "\"1\"",
        ] {
            let serde = serde_json::from_str::<i32>(raw).ok();
            if let Some(n) = plain_i32(raw) {
                assert_eq!(Some(n), serde, "{raw}");
            }
        }
        assert_eq!(plain_i32("-2147483648"), Some(i32::MIN));
        assert_eq!(plain_i32("-0"), None);
        assert_eq!(serde_json::from_str::<i32>("-0").ok(), None);
    }
}
