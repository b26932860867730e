//! The response headers every page is sent with.

/// Allows only this origin's stylesheet and script (no inline ones: the pages have neither
/// `<script>` bodies nor `style` attributes), images from here and from https (README images),
/// forms posting back here, and no framing or `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' https:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `Content-Type` of every page.
pub const HTML_CONTENT_TYPE: &str = "text/html; charset=utf-8";

const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    // README images are fetched from other hosts; they need not learn which page showed them.
    ("Referrer-Policy", "same-origin"),
    // For browsers older than CSP's frame-ancestors.
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

/// The headers to send with every page (and with its assets): CSP, no MIME sniffing, no
/// cross-origin referrer, no framing, and a browsing context of its own.
pub fn security_headers() -> &'static [(&'static str, &'static str)] {
    SECURITY_HEADERS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_strict() {
        assert_eq!(
            CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        );
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert!(!CONTENT_SECURITY_POLICY.contains("data:"));
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'none';"));
        let names: Vec<_> = security_headers().iter().map(|(n, _)| *n).collect();
        assert!(names.contains(&"Content-Security-Policy"));
        assert!(names.contains(&"X-Frame-Options"));
    }
}
