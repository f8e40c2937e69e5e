//! OCI/Docker manifests and indexes as pushed to `/v2/<name>/manifests/<ref>`: the parser must
//! never panic, whatever the media type and body.
#![no_main]
use libfuzzer_sys::fuzz_target;

const TYPES: [Option<&str>; 6] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/json; charset=utf-8"),
];

fuzz_target!(|data: &[u8]| {
    let Some((sel, body)) = data.split_first() else {
        return;
    };
    let _ = berth_registry::manifests::parse(TYPES[*sel as usize % TYPES.len()], body);
});
