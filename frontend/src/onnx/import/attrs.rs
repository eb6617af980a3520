//! Typed access to a node's attributes, with the attribute named in errors.

use super::super::proto::{AttributeProto, AttributeType as T, TensorProto};

#[derive(Clone, Copy)]
pub(in crate::onnx) struct Attrs<'a>(pub &'a [AttributeProto]);

impl<'a> Attrs<'a> {
    fn get(&self, name: &str) -> Option<&'a AttributeProto> {
        self.0.iter().find(|a| a.name == name)
    }

    fn typed(&self, name: &str, want: T) -> Result<Option<&'a AttributeProto>, String> {
        match self.get(name) {
            None => Ok(None),
            // Old exporters leave `type` unset; trust the field that is filled in then.
            Some(a) if a.r#type == want as i32 || a.r#type == T::Undefined as i32 => Ok(Some(a)),
            Some(a) => Err(format!(
                "attribute `{name}` should be {want:?} but is {:?}",
                T::try_from(a.r#type).unwrap_or(T::Undefined)
            )),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    pub fn i(&self, name: &str, default: i64) -> Result<i64, String> {
        Ok(self.typed(name, T::Int)?.map_or(default, |a| a.i))
    }

    pub fn f(&self, name: &str, default: f64) -> Result<f64, String> {
        Ok(self.typed(name, T::Float)?.map_or(default, |a| a.f as f64))
    }

    pub fn s(&self, name: &str, default: &str) -> Result<String, String> {
        Ok(self
            .typed(name, T::String)?
            .map_or(default.to_string(), |a| {
                String::from_utf8_lossy(&a.s).into_owned()
            }))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        Ok(self.typed(name, T::Ints)?.map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, String> {
        Ok(self.typed(name, T::Floats)?.map(|a| a.floats.clone()))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'a TensorProto>, String> {
        Ok(self.typed(name, T::Tensor)?.and_then(|a| a.t.as_ref()))
    }

    /// A list of `n` ints (kernel, strides, pads), `default` when absent.
    pub fn ints_n(&self, name: &str, n: usize, default: i64) -> Result<Vec<i64>, String> {
        match self.ints(name)? {
            None => Ok(vec![default; n]),
            Some(v) if v.len() == n => Ok(v),
            Some(v) => Err(format!(
                "attribute `{name}` should have {n} values, has {v:?}"
            )),
        }
    }
}
