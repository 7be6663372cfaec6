//! Chat templates: the model's Jinja `tokenizer.chat_template` rendered with minijinja the way
//! Hugging Face `apply_chat_template` renders it, or ChatML when there is none.

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{context, Environment, Error, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::{Tokenizer, TokenizerError};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `"system"`, `"user"`, `"assistant"`, or whatever role the template knows.
    pub role: String,
    /// The message text.
    pub content: String,
}

impl ChatMessage {
    /// A message with `role` and `content`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// The ChatML template, used when a model has no usable template.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}\
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const NAME: &str = "chat";

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    fallback: bool,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// The model's template, or ChatML when the model has none or it does not compile.
    /// `bos_token` / `eos_token` in the template are the texts of the model's BOS/EOS tokens.
    pub fn from_tokenizer(t: &Tokenizer) -> ChatTemplate {
        let text = |id: Option<u32>| id.and_then(|i| t.token_text(i)).unwrap_or("").to_owned();
        let (bos, eos) = (text(t.bos()), text(t.eos()));
        t.chat_template()
            .and_then(|src| ChatTemplate::new(src, &bos, &eos).ok())
            .unwrap_or_else(|| ChatTemplate::build(CHATML_TEMPLATE, &bos, &eos, true))
    }

    /// Compiles `source`; fails on a syntax error.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<ChatTemplate, TokenizerError> {
        let t = ChatTemplate::build(source, bos_token, eos_token, false);
        t.env.get_template(NAME)?;
        Ok(t)
    }

    /// The ChatML template.
    pub fn chatml() -> ChatTemplate {
        ChatTemplate::build(CHATML_TEMPLATE, "", "", true)
    }

    /// An environment with HF's settings and helpers, holding `source` if it compiles.
    fn build(source: &str, bos_token: &str, eos_token: &str, fallback: bool) -> ChatTemplate {
        let mut env = Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks on.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        // A compile error leaves the environment without the template; `new` reports it.
        let _ = env.add_template_owned(NAME, source.to_owned());
        ChatTemplate {
            env,
            source: source.to_owned(),
            fallback,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        }
    }

    /// Renders the conversation. `add_generation_prompt`: end with the header of an
    /// assistant turn so the model writes the reply.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let tmpl = self.env.get_template(NAME)?;
        let out = tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })?;
        Ok(out)
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether this is the ChatML fallback rather than the model's own template.
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

/// `strftime_now(format)`: the current UTC time formatted like Python's `strftime` (the common
/// directives; others are kept literally).
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime(&format, i64::try_from(secs).unwrap_or(0))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Proleptic Gregorian (year, month 1..=12, day 1..=31) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, usize, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, usize::try_from(month).unwrap_or(1), day)
}

fn strftime(format: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let sod = unix_secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0);
    let (h, m, s) = (sod / 3600, sod / 60 % 60, sod % 60);
    let month_name = MONTHS.get(month.wrapping_sub(1)).copied().unwrap_or("");
    let day_name = DAYS.get(weekday).copied().unwrap_or("");
    let yday = days - (civil_days(year, 1, 1)) + 1;
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:2}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&day.to_string()),
                Some('m') => out.push_str(&month.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o);
                }
                None => out.push_str("%-"),
            },
            Some('B') => out.push_str(month_name),
            Some('b') | Some('h') => out.push_str(month_name.get(..3).unwrap_or("")),
            Some('A') => out.push_str(day_name),
            Some('a') => out.push_str(day_name.get(..3).unwrap_or("")),
            Some('H') => out.push_str(&format!("{h:02}")),
            Some('I') => out.push_str(&format!("{:02}", (h + 11) % 12 + 1)),
            Some('p') => out.push_str(if h < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{m:02}")),
            Some('S') => out.push_str(&format!("{s:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
fn civil_days(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `tojson` as transformers defines it: Python's `json.dumps` (separators `", "`/`": "`,
/// no HTML escaping, non-ASCII kept unless `ensure_ascii=true`), with optional `indent` and
/// `sort_keys`.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let opts = JsonOpts {
        indent,
        ensure_ascii: ensure_ascii.unwrap_or(false),
        sort_keys: sort_keys.unwrap_or(false),
    };
    let mut out = String::new();
    write_json(value, &opts, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

struct JsonOpts {
    indent: Option<usize>,
    ensure_ascii: bool,
    sort_keys: bool,
}

fn json_string(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 || (ensure_ascii && !c.is_ascii()) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn newline(opts: &JsonOpts, level: usize, out: &mut String) {
    if let Some(n) = opts.indent {
        out.push('\n');
        out.push_str(&" ".repeat(n * level));
    }
}

fn write_json(v: &Value, opts: &JsonOpts, level: usize, out: &mut String) -> Result<(), Error> {
    let item_sep = if opts.indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = v.as_i64().filter(|_| v.is_integer()) {
                out.push_str(&i.to_string());
            } else {
                let f = f64::try_from(v.clone()).unwrap_or(f64::NAN);
                if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else if f.fract() == 0.0 && f.abs() < 1e16 {
                    out.push_str(&format!("{f:.1}"));
                } else {
                    out.push_str(&f.to_string());
                }
            }
        }
        ValueKind::String => json_string(v.as_str().unwrap_or(""), opts.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(opts, level + 1, out);
                write_json(item, opts, level + 1, out)?;
            }
            newline(opts, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if opts.sort_keys {
                keys.sort();
            }
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(opts, level + 1, out);
                let name = match key.as_str() {
                    Some(s) => s.to_owned(),
                    None => key.to_string(),
                };
                json_string(&name, opts.ensure_ascii, out);
                out.push_str(": ");
                write_json(&v.get_item(key)?, opts, level + 1, out)?;
            }
            newline(opts, level, out);
            out.push('}');
        }
        _ => json_string(&v.to_string(), opts.ensure_ascii, out),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_days(2024, 2, 29), 19_782);
        // 2024-02-29 13:05:09 UTC was a Thursday.
        let t = 19_782 * 86_400 + 13 * 3600 + 5 * 60 + 9;
        assert_eq!(
            strftime("%d %b %Y %A %H:%M:%S %I%p %j %-d %B %%", t),
            "29 Feb 2024 Thursday 13:05:09 01PM 060 29 February %"
        );
        assert_eq!(strftime("%Q", 0), "%Q");
    }

    #[test]
    fn json_like_python() {
        let v = Value::from_serialize(
            serde_json::json!({"a": [1, 2.0, "x\"\n"], "b": null, "c": true}),
        );
        let mut out = String::new();
        let opts = JsonOpts {
            indent: None,
            ensure_ascii: false,
            sort_keys: true,
        };
        write_json(&v, &opts, 0, &mut out).unwrap();
        assert_eq!(out, r#"{"a": [1, 2.0, "x\"\n"], "b": null, "c": true}"#);
        let mut out = String::new();
        let opts = JsonOpts {
            indent: Some(2),
            ensure_ascii: true,
            sort_keys: true,
        };
        let v = Value::from_serialize(serde_json::json!({"k": ["é"], "e": {}}));
        write_json(&v, &opts, 0, &mut out).unwrap();
        assert_eq!(out, "{\n  \"e\": {},\n  \"k\": [\n    \"\\u00e9\"\n  ]\n}");
    }
}
