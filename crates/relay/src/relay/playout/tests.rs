use std::time::Duration;

use std::time::Instant;

use super::*;

const LEAD: Duration = Duration::from_millis(200);
const MS: fn(u64) -> Duration = Duration::from_millis;

fn drain(p: &mut Playout, now: Instant) -> Vec<Release> {
    let mut out = Vec::new();
    while let Some(r) = p.poll(now) {
        out.push(r);
    }
    out
}

fn frames(out: &[Release]) -> usize {
    out.iter()
        .filter(|r| matches!(r, Release::Frame(_)))
        .count()
}

#[test]
fn rechunks_to_20ms_frames_and_flushes_the_tail() {
    let mut p = Playout::new(Duration::from_secs(10), Duration::from_secs(30));
    assert_eq!(p.push(&[1u8; 500], Some(1)), Accepted::Queued);
    let t0 = Instant::now();
    let sizes: Vec<usize> = drain(&mut p, t0)
        .into_iter()
        .filter_map(|r| match r {
            Release::Frame(f) => Some(f.len()),
            Release::Mark(_) => None,
        })
        .collect();
    assert_eq!(sizes, [160, 160, 160, 20]);
}

#[test]
fn releases_at_real_time_with_a_bounded_lead() {
    let mut p = Playout::new(LEAD, Duration::from_secs(30));
    p.push(&[0u8; 8000], Some(1)); // 1 s of agent audio, delivered at once
    let t0 = Instant::now();
    let first = drain(&mut p, t0);
    // 200 ms lead plus the frame that crosses it.
    assert_eq!(frames(&first), 11);
    let next = p.next_deadline(t0).unwrap();
    assert_eq!(next, t0 + MS(20), "one frame every 20 ms from here");
    assert!(p.poll(t0 + MS(19)).is_none() || p.held() < Duration::from_millis(780));
    // Over the next 800 ms the rest goes out at real time, never more than the lead ahead.
    let mut sent = frames(&first);
    let mut t = t0;
    while sent < 50 {
        t = p.next_deadline(t).unwrap();
        assert!(t <= t0 + MS(1000), "deadline {:?}", t - t0);
        sent += frames(&drain(&mut p, t));
        assert!(
            sent as u64 * 20 <= (t - t0).as_millis() as u64 + 220,
            "too far ahead at {:?}",
            t - t0
        );
    }
    assert!(
        t >= t0 + MS(770),
        "all released only near real time: {:?}",
        t - t0
    );
}

#[test]
fn marks_every_500ms_and_at_the_end_of_a_burst() {
    let mut p = Playout::new(Duration::from_secs(60), Duration::from_secs(60));
    p.push(&[0u8; 8000], Some(1));
    let t0 = Instant::now();
    let out = drain(&mut p, t0);
    let marks: Vec<usize> = out
        .iter()
        .enumerate()
        .filter_map(|(i, r)| matches!(r, Release::Mark(_)).then_some(i))
        .collect();
    // After 25 frames (500 ms) and after 50 frames.
    assert_eq!(marks, [25, 51], "{out:?}");
    // A short burst gets its mark MARK_IDLE after the last frame.
    p.push(&[0u8; 160], Some(2));
    assert_eq!(frames(&drain(&mut p, t0)), 1);
    assert_eq!(p.next_deadline(t0), Some(t0 + MARK_IDLE));
    assert!(matches!(p.poll(t0 + MARK_IDLE), Some(Release::Mark(_))));
    assert_eq!(p.next_deadline(t0 + MARK_IDLE), None);
}

#[test]
fn echoed_marks_track_what_was_heard_and_correct_the_playhead() {
    let mut p = Playout::new(LEAD, Duration::from_secs(60));
    p.push(&[0u8; 4000], Some(1)); // 500 ms
    let t0 = Instant::now();
    let mut t = t0;
    let mut names = Vec::new();
    for _ in 0..200 {
        for r in drain(&mut p, t) {
            if let Release::Mark(n) = r {
                let mut name = String::new();
                mark_name(n, &mut name);
                names.push(name);
            }
        }
        match p.next_deadline(t) {
            Some(d) => t = d,
            None => break,
        }
    }
    assert_eq!(names.len(), 1);
    assert!(!p.on_mark("unknown", t));
    // Twilio echoes late (it played slower): nothing left to play, heard = 500 ms.
    assert!(p.on_mark(&names[0], t + MS(300)));
    assert_eq!(p.heard(), MS(500));
    assert!(!p.on_mark(&names[0], t + MS(300)), "each mark counts once");
}

#[test]
fn barge_in_drops_held_audio_and_late_audio_of_the_response() {
    let mut p = Playout::new(LEAD, Duration::from_secs(60));
    p.push(&[0u8; 16000], Some(7)); // 2 s
    let t0 = Instant::now();
    drain(&mut p, t0);
    assert!(p.held() > Duration::from_millis(1500));
    let dropped = p.interrupt(Some(7), t0 + MS(50));
    assert!(dropped >= 85, "dropped {dropped}");
    assert_eq!(p.held(), Duration::ZERO);
    assert_eq!(p.poll(t0 + MS(50)), None);
    // Late audio of the interrupted response (and earlier) is refused ...
    assert_eq!(p.push(&[0u8; 160], Some(7)), Accepted::Stale);
    assert_eq!(p.push(&[0u8; 160], Some(6)), Accepted::Stale);
    // ... the next response plays at once.
    assert_eq!(p.push(&[0u8; 160], Some(8)), Accepted::Queued);
    assert!(matches!(p.poll(t0 + MS(50)), Some(Release::Frame(_))));
}

#[test]
fn the_local_buffer_is_bounded() {
    let mut p = Playout::new(LEAD, Duration::from_millis(100)); // 800 bytes
    assert_eq!(p.push(&[0u8; 500], None), Accepted::Queued);
    assert_eq!(p.push(&[0u8; 500], None), Accepted::Overflow(200));
    assert_eq!(p.held(), Duration::from_millis(100));
}
