//! The few fields of a ListObjectsV2 answer the store needs, read without
//! an XML library: each `<Contents>`' `Key` and `LastModified`, and the
//! continuation.

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Object {
    pub(super) key: String,
    /// `LastModified` in ms since the epoch, if it parsed.
    pub(super) modified_ms: Option<u64>,
}

/// One page of a listing.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Page {
    pub(super) objects: Vec<Object>,
    pub(super) truncated: bool,
    pub(super) next: Option<String>,
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(&xml[start..end])
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

pub(super) fn parse(xml: &str) -> Page {
    let mut page = Page {
        truncated: element(xml, "IsTruncated") == Some("true"),
        next: element(xml, "NextContinuationToken").map(unescape),
        ..Page::default()
    };
    let mut rest = xml;
    while let Some(start) = rest.find("<Contents>") {
        let after = &rest[start + "<Contents>".len()..];
        let Some(end) = after.find("</Contents>") else { break };
        let block = &after[..end];
        if let Some(key) = element(block, "Key") {
            let modified_ms = element(block, "LastModified").and_then(iso8601_ms);
            page.objects.push(Object { key: unescape(key), modified_ms });
        }
        rest = &after[end..];
    }
    page
}

/// `2026-12-01T19:40:56.000Z` (or without fraction) → ms since the epoch.
fn iso8601_ms(s: &str) -> Option<u64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from civil (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_and_times_parse() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>b</Name><IsTruncated>true</IsTruncated>
            <Contents><Key>im/refs/at_x/g:1</Key><LastModified>2026-12-01T19:40:56.000Z</LastModified><Size>0</Size></Contents>
            <Contents><Key>im/a&amp;b</Key><LastModified>1970-01-01T00:00:01Z</LastModified></Contents>
            <NextContinuationToken>tok&amp;en</NextContinuationToken></ListBucketResult>"#;
        let page = parse(xml);
        assert!(page.truncated);
        assert_eq!(page.next.as_deref(), Some("tok&en"));
        assert_eq!(
            page.objects,
            vec![
                Object { key: "im/refs/at_x/g:1".into(), modified_ms: Some(1_796_154_056_000) },
                Object { key: "im/a&b".into(), modified_ms: Some(1000) },
            ]
        );
        assert_eq!(
            parse("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>"),
            Page::default()
        );
        assert_eq!(iso8601_ms("2000-02-29T00:00:00.5Z"), Some(951_782_400_500));
    }
}
