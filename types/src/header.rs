//! HTTP request headers as users write them (`Name: value`), for a DataVolume's
//! `extraHeaders` and the importer that sends them.

/// Splits `Name: value`: the name must be an HTTP token (RFC 9110), the value (trimmed)
/// may hold no control character but tab.
pub fn parse_header(h: &str) -> Result<(String, String), String> {
    let Some((name, value)) = h.split_once(':') else {
        return Err(format!(
            "{h:?} is not a header: write it as \"Name: value\""
        ));
    };
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    let value = value.trim();
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "the value of header {name} holds a control character"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_as_the_importer_sends_them() {
        assert_eq!(
            parse_header("X-Token:  abc def ").unwrap(),
            ("X-Token".to_string(), "abc def".to_string())
        );
        assert_eq!(parse_header("A:").unwrap().1, "");
        assert_eq!(parse_header("A: b:c").unwrap().1, "b:c");
        for bad in ["no colon", ": v", "Bad Name: v", "X: a\nb", "X\u{e9}: v"] {
            assert!(parse_header(bad).is_err(), "{bad}");
        }
    }
}
