//! Typed access to a node's attributes, with the attribute named in errors.

use super::super::proto::{AttributeProto, AttributeType as T, TensorProto};

/// An attribute of the wrong type or length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(in crate::onnx) enum AttrError {
    #[error("attribute `{name}` should be {want:?} but is {got:?}")]
    WrongType { name: String, want: T, got: T },
    #[error("attribute `{name}` should have {n} values, has {got:?}")]
    WrongLength {
        name: String,
        n: usize,
        got: Vec<i64>,
    },
}

// The importer's per-node converters report plain messages; the attribute's text is kept.
impl From<AttrError> for String {
    fn from(e: AttrError) -> String {
        e.to_string()
    }
}

#[derive(Clone, Copy)]
pub(in crate::onnx) struct Attrs<'a>(pub &'a [AttributeProto]);

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }

    fn typed(&self, name: &str, want: T) -> Result<Option<&'a AttributeProto>, AttrError> {
        match self.get(name) {
            None => Ok(None),
            // Old exporters leave `type` unset; trust the field that is filled in then.
            Some(a) if a.r#type == want as i32 || a.r#type == T::Undefined as i32 => Ok(Some(a)),
            Some(a) => Err(AttrError::WrongType {
                name: name.to_string(),
                want,
                got: T::try_from(a.r#type).unwrap_or(T::Undefined),
            }),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn i(&self, name: &str, default: i64) -> Result<i64, AttrError> {
        Ok(self.typed(name, T::Int)?.map_or(default, |a| a.i))
    }

    pub fn f(&self, name: &str, default: f64) -> Result<f64, AttrError> {
        Ok(self.typed(name, T::Float)?.map_or(default, |a| a.f as f64))
    }

    pub fn s(&self, name: &str, default: &str) -> Result<String, AttrError> {
        Ok(self
            .typed(name, T::String)?
            .map_or(default.to_string(), |a| {
                String::from_utf8_lossy(&a.s).into_owned()
            }))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, AttrError> {
        Ok(self.typed(name, T::Ints)?.map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, AttrError> {
        Ok(self.typed(name, T::Floats)?.map(|a| a.floats.clone()))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, AttrError> {
        Ok(self.typed(name, T::Tensor)?.and_then(|a| a.t.as_ref()))
    }

    /// A list of `n` ints (kernel, strides, pads), `default` when absent.
    pub fn ints_n(&self, name: &str, n: usize, default: i64) -> Result<Vec<i64>, AttrError> {
        match self.ints(name)? {
            None => Ok(vec![default; n]),
            Some(v) if v.len() == n => Ok(v),
            Some(v) => Err(AttrError::WrongLength {
                name: name.to_string(),
                n,
                got: v,
            }),
        }
    }
}
