//! Placing and folding error messages: every tool reports bad input as one line,
//! `file:line:col: message`.

/// 1-based line and column (in characters) of byte offset `at` in `text`. An offset past
/// the end, or inside a multi-byte character, is moved back to a character boundary.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// `message` on one line: line breaks (and the spaces around them) become one space.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A latency in microseconds, in the unit that reads best ("850 µs", "12.3 ms", "1.20 s").
pub fn us(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    if v < 1000.0 {
        format!("{v:.0} µs")
    } else if v < 1_000_000.0 {
        let ms = v / 1000.0;
        if ms < 10.0 {
            format!("{ms:.2} ms")
        } else if ms < 100.0 {
            format!("{ms:.1} ms")
        } else {
            format!("{ms:.0} ms")
        }
    } else {
        format!("{:.2} s", v / 1_000_000.0)
    }
}

/// `+1.23 ms` / `-80 µs`.
pub fn signed_us(v: f64) -> String {
    if v < 0.0 {
        format!("-{}", us(-v))
    } else {
        format!("+{}", us(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_characters() {
        let t = "a = 1\n[load]\nrate = 0\n";
        assert_eq!(line_col(t, t.find("0\n").unwrap()), (3, 8));
        assert_eq!(line_col("ab\ncé d", 7), (2, 4));
        assert_eq!(line_col("x", 0), (1, 1));
        // inside the two bytes of 'é', and past the end
        assert_eq!(line_col("aé\nb", 2), (1, 2));
        assert_eq!(line_col("aé", 99), (1, 3));
    }

    #[test]
    fn messages_fold_to_one_line() {
        assert_eq!(one_line("a\nb\r\n  c "), "a b c");
    }
}
