//! A version's manifest as stored: the compact JSON text of an object, read field by field only
//! while a document is rendered.
//!
//! Kept as text because a decoded `serde_json` map costs about ten times its JSON in memory (a
//! tree of small maps and strings): a 3,000-version package decoded whole took ~50 MB, its text
//! takes ~4 MB.

use std::fmt;

use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A manifest (package.json as published, minus what the registry keeps apart): always a JSON object.
#[derive(Debug, Clone)]
pub struct Manifest(Box<RawValue>);

impl Manifest {
    /// The manifest holding `map`.
    pub(crate) fn from_map(map: &Map<String, Value>) -> Result<Self, serde_json::Error> {
        serde_json::value::to_raw_value(map).map(Manifest)
    }

    /// The manifest whose JSON text is `raw`, which must be an object.
    pub(crate) fn from_raw(raw: Box<RawValue>) -> Result<Self, &'static str> {
        if raw.get().trim_start().starts_with('{') {
            Ok(Manifest(raw))
        } else {
            Err("a manifest is a JSON object")
        }
    }

    /// Its JSON text.
    pub fn json(&self) -> &str {
        self.0.get()
    }

    /// Its top-level fields in stored order, values left as JSON text.
    pub(crate) fn fields(&self) -> Result<Fields<'_>, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Self) -> bool {
        self.json() == other.json()
    }
}

impl Serialize for Manifest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Manifest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through a map, not straight into `RawValue`: version records are an internally tagged
        // enum, which serde buffers, and `RawValue` cannot be read from that buffer.
        let map = Map::<String, Value>::deserialize(deserializer)?;
        Manifest::from_map(&map).map_err(D::Error::custom)
    }
}

/// A manifest's top-level fields in stored order, each value still JSON text.
pub struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'a> Fields<'a> {
    /// A field's JSON text.
    pub(crate) fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }

    /// Every field, in stored order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &'a RawValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for FieldsVisitor<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'a>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(entry) = map.next_entry::<String, &'a RawValue>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(v: Value) -> Manifest {
        Manifest::from_map(v.as_object().unwrap()).unwrap()
    }

    #[test]
    fn fields_keep_order_and_text() {
        let m = manifest(json!({"name": "a", "dependencies": {"x": "^1"}, "b\"q": [1, 2.5]}));
        let fields = m.fields().unwrap();
        let names: Vec<_> = fields.iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["name", "dependencies", "b\"q"]);
        assert_eq!(fields.get("dependencies").unwrap().get(), r#"{"x":"^1"}"#);
        let quoted: Value = serde_json::from_str(fields.get("b\"q").unwrap().get()).unwrap();
        assert_eq!(quoted, json!([1, 2.5]));
        assert!(fields.get("missing").is_none());
    }

    #[test]
    fn round_trips_as_an_object_inside_tagged_records() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        #[serde(tag = "state", rename_all = "snake_case")]
        enum Tagged {
            Live { manifest: Manifest },
        }
        let before = Tagged::Live {
            manifest: manifest(json!({"name": "a", "scripts": {"t": "x"}})),
        };
        let text = serde_json::to_string(&before).unwrap();
        assert_eq!(
            text,
            r#"{"state":"live","manifest":{"name":"a","scripts":{"t":"x"}}}"#
        );
        assert_eq!(serde_json::from_str::<Tagged>(&text).unwrap(), before);
    }
}
