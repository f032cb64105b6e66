//! The status page's two switches, as links: the usage section's range (24h, 7d, 30d)
//! and the uptime column's window (24h, 7d, 30d, 90d), each link keeping the other's
//! choice.

use super::uptime::PAGE_WINDOWS;
use crate::config::Window;
use crate::usage::summary::Range;

/// A link of the usage range switch or of the uptime window switch.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeLink {
    pub name: &'static str,
    /// The page with this range or window, the other switch's choice kept.
    pub href: String,
    pub current: bool,
}

/// The page's address showing usage over `range` and uptime over `window`, each left
/// out at its default (24h).
pub fn page_href(range: Range, window: Window) -> String {
    let mut query = Vec::new();
    if range != Range::default() {
        query.push(format!("range={}", range.as_str()));
    }
    if window != Window::Day {
        query.push(format!("window={}", window.as_str()));
    }
    match query.is_empty() {
        true => "/".to_owned(),
        false => format!("/?{}", query.join("&")),
    }
}

/// The usage range switch with `current` marked.
pub fn range_links(current: Range, window: Window) -> Vec<RangeLink> {
    Range::ALL
        .iter()
        .map(|r| RangeLink {
            name: r.as_str(),
            href: page_href(*r, window),
            current: *r == current,
        })
        .collect()
}

/// The uptime window switch with `current` marked.
pub fn window_links(range: Range, current: Window) -> Vec<RangeLink> {
    PAGE_WINDOWS
        .iter()
        .map(|w| RangeLink {
            name: w.as_str(),
            href: page_href(range, *w),
            current: *w == current,
        })
        .collect()
}
