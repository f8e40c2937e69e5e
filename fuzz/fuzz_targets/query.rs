//! Query-protocol bodies (`Action=...&A.member.1.B=x`): form decoding and the member-list
//! expansion must never panic (or allocate without bound on indexes like `member.99999999`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = form_urlencoded_pairs(data);
    let _ = berth_control::cloudwatch::query_to_json(&pairs);
});

fn form_urlencoded_pairs(data: &[u8]) -> Vec<(String, String)> {
    let s = String::from_utf8_lossy(data);
    s.split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}
