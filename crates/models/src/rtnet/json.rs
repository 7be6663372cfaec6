//! JSON helpers for the RTNeural importers: objects with their key order kept (a PyTorch
//! state-dict's layer order is its key order) and nested number arrays as shaped f32 tensors.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use std::fmt;

/// A JSON object's entries in file order.
pub struct OrderedObject(pub Vec<(String, Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = map.next_entry::<String, Value>()? {
                    v.push((k, val));
                }
                Ok(OrderedObject(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A dense tensor read from nested JSON arrays: `shape` outermost first, values row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Deepest nesting accepted (real files use at most 4).
const MAX_DEPTH: usize = 8;

impl JsonTensor {
    /// Reads a number or a rectangular nest of arrays of numbers.
    pub fn from_value(v: &Value) -> Result<JsonTensor, String> {
        let mut shape = Vec::new();
        let mut cur = v;
        while let Value::Array(a) = cur {
            if shape.len() >= MAX_DEPTH {
                return Err("arrays nested too deeply".into());
            }
            shape.push(a.len());
            match a.first() {
                Some(first) => cur = first,
                None => break,
            }
        }
        let mut data = Vec::with_capacity(shape.iter().product());
        collect(v, &shape, &mut data)?;
        Ok(JsonTensor { shape, data })
    }

    /// Checks the shape, naming the tensor in the error.
    pub fn expect_shape(&self, what: &str, shape: &[usize]) -> Result<(), String> {
        if self.shape == shape {
            Ok(())
        } else {
            Err(format!(
                "{what} has shape {:?}, expected {shape:?}",
                self.shape
            ))
        }
    }
}

fn collect(v: &Value, shape: &[usize], out: &mut Vec<f32>) -> Result<(), String> {
    match (v, shape.split_first()) {
        (Value::Number(n), None) => {
            let x = n.as_f64().ok_or("a number out of range")?;
            out.push(x as f32);
            Ok(())
        }
        (Value::Array(a), Some((&n, rest))) => {
            if a.len() != n {
                return Err(format!(
                    "ragged array: {} entries where {n} were expected",
                    a.len()
                ));
            }
            a.iter().try_for_each(|e| collect(e, rest, out))
        }
        (Value::Array(_), None) => Err("arrays nested deeper than elsewhere".into()),
        (_, _) => Err("expected a number or an array of numbers".into()),
    }
}

/// Transposes a row-major `[r][c]` matrix to `[c][r]`.
pub fn transpose(data: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0.0; data.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = data[i * c + j];
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_and_order() {
        let o: OrderedObject = serde_json::from_str(r#"{"b":[[1,2],[3,4]],"a":5}"#).unwrap();
        assert_eq!(o.0[0].0, "b");
        let t = JsonTensor::from_value(&o.0[0].1).unwrap();
        assert_eq!(
            (t.shape.clone(), t.data.clone()),
            (vec![2, 2], vec![1., 2., 3., 4.])
        );
        assert_eq!(
            JsonTensor::from_value(&o.0[1].1).unwrap().shape,
            Vec::<usize>::new()
        );
        let ragged: Value = serde_json::from_str("[[1,2],[3]]").unwrap();
        assert!(JsonTensor::from_value(&ragged).is_err());
        let bad: Value = serde_json::from_str(r#"[[1,"x"]]"#).unwrap();
        assert!(JsonTensor::from_value(&bad).is_err());
        assert_eq!(
            transpose(&[1., 2., 3., 4., 5., 6.], 2, 3),
            vec![1., 4., 2., 5., 3., 6.]
        );
    }
}
