//! Well-known crawlers, recognised by their user agent: a key that sends one of these names is
//! flagged wherever a threshold would ban it (banning a search engine's crawler costs a site its
//! place in the results). The user agent is only a claim; a flag says "check before banning",
//! never "trusted".

/// Substrings (ASCII, matched case-insensitively) of the user agents of well-known crawlers.
pub const NAMES: &[&str] = &[
    "googlebot",
    "google-inspectiontool",
    "googleother",
    "adsbot-google",
    "bingbot",
    "msnbot",
    "adidxbot",
    "duckduckbot",
    "yandexbot",
    "baiduspider",
    "applebot",
    "slurp",
    "petalbot",
    "seznambot",
    "qwantbot",
    "facebookexternalhit",
    "linkedinbot",
    "twitterbot",
    "ahrefsbot",
    "semrushbot",
    "mj12bot",
    "gptbot",
    "claudebot",
    "ccbot",
];

/// The crawler a user agent names, if any.
pub fn named_in(user_agent: &[u8]) -> Option<&'static str> {
    NAMES.iter().copied().find(|name| {
        user_agent
            .windows(name.len())
            .any(|w| w.eq_ignore_ascii_case(name.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_crawlers_whatever_the_case_and_nothing_in_browsers() {
        let google = b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
        assert_eq!(named_in(google), Some("googlebot"));
        assert_eq!(
            named_in(b"Mozilla/5.0 (compatible; BINGBOT/2.0)"),
            Some("bingbot")
        );
        let firefox = b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        assert_eq!(named_in(firefox), None);
        assert_eq!(named_in(b""), None);
        assert_eq!(named_in(b"\xff\xfe<script>"), None);
    }
}
