//! Streams of several channels (`/channel/a,b`) and patterns (`/channel/g.*`), as
//! the simulation's subscribers read them: which channels a stream carries, and
//! how one of its events becomes the record a stream of that channel alone would
//! have made, so the checker judges every (subscriber, channel) the same way.
//!
//! On such a stream each event's data is `{"channel":C,"data":D}` and its id is a
//! cursor of every part (channel or pattern) at once (PROTOCOL.md, "Cursors of
//! streams of several channels"). An event of channel `C` is recorded under the
//! actor `subscriber@C` with the data `D` and, as its id, `C`'s part of the stream
//! cursor in the form of a single channel's cursor (for a channel reached through
//! a pattern, the pattern's part: one frontier across its channels). A `reset`
//! names the part it concerns and applies to every channel of it; a `gap` is about
//! an origin, so one that comes through a pattern applies to every channel of the
//! pattern (the stream gets it once, under one of them). An `overflow` names the
//! part that fell behind, but it ends the whole stream: every channel's events
//! after its part of the cursor wait for the resume, so it applies to all of them,
//! each with its own part of the cursor.

use sse_cluster::event::{Cursor, Frontier};

/// A channel an event is recorded under, with the id to record.
pub type Target = (String, Option<String>);

/// One stream a subscriber opens: `path` is what follows `/channel/`.
#[derive(Debug, Clone)]
pub struct Stream {
    pub path: String,
    /// Its channels and patterns, sorted by name: the order of the cursor's parts.
    parts: Vec<String>,
    /// The channels it carries (plain ones, and the plan's channels its patterns
    /// match), each with the index of its part.
    channels: Vec<(String, usize)>,
}

/// The prefix a pattern matches (`g.` for `g.*`), if `name` is one.
pub fn pattern_prefix(name: &str) -> Option<&str> {
    let prefix = name.strip_suffix('*')?;
    prefix.ends_with(['.', ':']).then_some(prefix)
}

impl Stream {
    /// The stream of `path` in a plan whose publishers use `published`.
    pub fn new(path: &str, published: &[String]) -> Stream {
        let mut parts: Vec<String> = path.split(',').map(str::to_owned).collect();
        parts.sort_unstable();
        let mut channels = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            match pattern_prefix(part) {
                Some(prefix) => channels.extend(
                    published
                        .iter()
                        .filter(|c| c.starts_with(prefix))
                        .map(|c| (c.clone(), i)),
                ),
                None => channels.push((part.clone(), i)),
            }
        }
        Stream {
            path: path.to_owned(),
            parts,
            channels,
        }
    }

    /// Whether this is a stream of one plain channel (events are not wrapped).
    pub fn is_single(&self) -> bool {
        self.parts.len() == 1 && pattern_prefix(&self.parts[0]).is_none()
    }

    /// Whether it follows a pattern.
    pub fn has_pattern(&self) -> bool {
        self.parts.iter().any(|p| pattern_prefix(p).is_some())
    }

    /// The channels it carries.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(|(c, _)| c.as_str())
    }

    /// The part that carries `name` (a channel, or a pattern of the stream).
    fn part_of(&self, name: &str) -> Option<usize> {
        if let Some(i) = self.parts.iter().position(|p| p == name) {
            return Some(i);
        }
        self.parts
            .iter()
            .position(|p| pattern_prefix(p).is_some_and(|prefix| name.starts_with(prefix)))
    }

    /// What one event of this (wrapped) stream is for the checker: the channels
    /// to record it under, each with the id to record (`stream_id`'s part of the
    /// channel, as a single channel's cursor), and the unwrapped data. `None` if it
    /// is not wrapped as it should be, or names a channel the stream does not carry.
    pub fn unwrap<'a>(
        &self,
        signal: Option<&str>,
        data: &'a str,
        stream_id: &str,
    ) -> Option<(Vec<Target>, &'a str)> {
        let rest = data.strip_prefix(r#"{"channel":""#)?;
        let (named, rest) = rest.split_once('"')?;
        let inner = rest.strip_prefix(r#","data":"#)?.strip_suffix('}')?;
        let part = self.part_of(named)?;
        let targets: Vec<(String, usize)> = match signal {
            None => vec![(named.to_owned(), part)],
            Some("overflow") => self.channels.clone(),
            Some(_) => self
                .channels
                .iter()
                .filter(|(_, i)| *i == part)
                .cloned()
                .collect(),
        };
        let targets = targets
            .into_iter()
            .map(|(channel, part)| {
                let id = part_cursor(stream_id, part, self.parts.len()).map(|c| c.encode());
                (channel, id)
            })
            .collect();
        Some((targets, inner))
    }
}

/// Part `part` of a stream cursor of `count` parts, or `None` if `text` is not one.
/// The form: `m<set hex8>_<time>_<origin hex>(.<origin hex>)*(_<back>(.<seq>)*)+`,
/// an empty number being 0.
pub fn part_cursor(text: &str, part: usize, count: usize) -> Option<Cursor> {
    let mut fields = text.strip_prefix('m')?.split('_');
    let _set = fields.next()?;
    let time: u64 = fields.next()?.parse().ok()?;
    let origins: Vec<u64> = match fields.next()? {
        "" => Vec::new(),
        list => list
            .split('.')
            .map(|o| u64::from_str_radix(o, 16).ok())
            .collect::<Option<_>>()?,
    };
    let groups: Vec<&str> = fields.collect();
    if groups.len() != count {
        return None;
    }
    let number = |text: &str| -> Option<u64> {
        if text.is_empty() {
            Some(0)
        } else {
            text.parse().ok()
        }
    };
    let mut numbers = groups.get(part)?.split('.');
    let back = number(numbers.next()?)?;
    let mut frontier = Frontier::default();
    for origin in &origins {
        let seq = number(numbers.next()?)?;
        if seq > 0 {
            frontier.advance(*origin, seq);
        }
    }
    Some(Cursor {
        time_ms: time.checked_sub(back)?,
        frontier,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Vec<String> {
        ["c0", "g.c1", "g.c2"].map(str::to_owned).to_vec()
    }

    #[test]
    fn a_pattern_carries_the_plan_channels_it_matches() {
        let stream = Stream::new("g.*,c0", &published());
        assert!(!stream.is_single() && stream.has_pattern());
        assert_eq!(
            stream.channels().collect::<Vec<_>>(),
            ["c0", "g.c1", "g.c2"]
        );
        assert!(Stream::new("c0", &published()).is_single());
        assert!(!Stream::new("c0,g.c1", &published()).has_pattern());
    }

    #[test]
    fn an_event_is_unwrapped_under_its_channel_with_its_part_of_the_cursor() {
        let stream = Stream::new("g.*,c0", &published());
        // Parts sorted: c0, then g.*.
        let id = "m0000abcd_1000_7.1f_.3._250..9";
        let of = |channel: &str, id: &str| (channel.to_owned(), Some(id.to_owned()));
        let (targets, data) = stream
            .unwrap(None, r#"{"channel":"g.c2","data":{"p":1,"n":2}}"#, id)
            .unwrap();
        assert_eq!(targets, [of("g.c2", "750~1f.9")]);
        assert_eq!(data, r#"{"p":1,"n":2}"#);
        let (targets, _) = stream
            .unwrap(None, r#"{"channel":"c0","data":1}"#, id)
            .unwrap();
        assert_eq!(targets, [of("c0", "1000~7.3")]);
        // A signal through the pattern concerns all of its channels.
        let (targets, data) = stream
            .unwrap(Some("reset"), r#"{"channel":"g.*","data":{"r":1}}"#, id)
            .unwrap();
        assert_eq!(targets, [of("g.c1", "750~1f.9"), of("g.c2", "750~1f.9")]);
        assert_eq!(data, r#"{"r":1}"#);
        let (targets, _) = stream
            .unwrap(Some("gap"), r#"{"channel":"g.c1","data":{}}"#, id)
            .unwrap();
        assert_eq!(targets.len(), 2);
        // An overflow ends the whole stream: every channel, with its own part.
        let (targets, _) = stream
            .unwrap(Some("overflow"), r#"{"channel":"g.*","data":{}}"#, id)
            .unwrap();
        let all = [
            of("c0", "1000~7.3"),
            of("g.c1", "750~1f.9"),
            of("g.c2", "750~1f.9"),
        ];
        assert_eq!(targets, all);
        // Not wrapped, or a channel it does not carry.
        assert!(stream.unwrap(None, r#"{"p":1}"#, id).is_none());
        assert!(stream
            .unwrap(None, r#"{"channel":"x","data":1}"#, id)
            .is_none());
        assert_eq!(part_cursor("1000~7.3", 0, 2), None);
    }
}
