//! Comma-separated frames: one frame per line, values separated by commas (what numpy's
//! `savetxt(..., delimiter=',')` writes). Blank lines are skipped; anything else that is not a
//! number is an error naming the line and column.

use super::RtNetError;

/// Parses every non-blank line into a row of f32.
pub fn parse_rows(text: &str) -> Result<Vec<Vec<f32>>, RtNetError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let row = line
            .split(',')
            .enumerate()
            .map(|(j, v)| {
                let v = v.trim();
                v.parse::<f32>().map_err(|_| {
                    RtNetError::Format(format!(
                        "CSV line {}, column {}: {v:?} is not a number",
                        i + 1,
                        j + 1
                    ))
                })
            })
            .collect::<Result<Vec<f32>, _>>()?;
        rows.push(row);
    }
    Ok(rows)
}

/// Formats one row (shortest round-trip representation of each value).
pub fn format_row(row: &[f32], out: &mut String) {
    use std::fmt::Write;
    for (j, v) in row.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v:e}");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_reports_bad_cells() {
        let r = parse_rows("1,2.5\n\n-3e-1, 4\n").unwrap();
        assert_eq!(r, vec![vec![1.0, 2.5], vec![-0.3, 4.0]]);
        let e = parse_rows("1,2\n3,x\n").unwrap_err().to_string();
        assert!(e.contains("line 2, column 2"), "{e}");
        let mut s = String::new();
        format_row(&[0.1, -2.0], &mut s);
        assert_eq!(parse_rows(&s).unwrap(), vec![vec![0.1, -2.0]]);
    }
}
