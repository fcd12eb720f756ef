//! A bulk publish body (`application/x-ndjson`): `parse_ndjson` refuses it naming a
//! line (or saying it holds no events), or its events are exactly what
//! `Publish::from_json` makes of each line that is not blank, in order, within the
//! bounds it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sse_cluster::event::Publish;
use sse_cluster::http::parse_ndjson;

const MAX_LINE: usize = 256;
const MAX_EVENTS: usize = 8;

fuzz_target!(|body: &[u8]| {
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')))
        .collect();
    match parse_ndjson(body, MAX_LINE, MAX_EVENTS) {
        Ok(events) => {
            assert!(!events.is_empty() && events.len() <= MAX_EVENTS);
            assert_eq!(events.len(), lines.len());
            for (event, line) in events.iter().zip(&lines) {
                assert!(line.len() <= MAX_LINE);
                assert_eq!(Publish::from_json(line).as_ref(), Ok(event));
            }
        }
        Err(error) => {
            let message = &error.message;
            assert!(
                message.starts_with("line ") || lines.is_empty(),
                "refused without naming a line: {message}"
            );
            // A body whose lines all parse within the bounds is never refused.
            let fine = !lines.is_empty()
                && lines.len() <= MAX_EVENTS
                && lines
                    .iter()
                    .all(|l| l.len() <= MAX_LINE && Publish::from_json(l).is_ok());
            assert!(!fine, "refused a good body: {message}");
        }
    }
});
