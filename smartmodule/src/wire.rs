//! Record encoding for the SmartModule ABI, byte for byte what fluvio-protocol 0.50 writes, but with
//! each record's value copied in bulk: its `Encoder` writes (and sizes) a `RecordData` one byte at a
//! time, which dominates the cost of moving 100 KB images through an engine. The small parts (record
//! header, key) still go through fluvio's own encoders; a property test pins the equivalence.

use fluvio_smartmodule::dataplane::core::{Encoder, EncoderVarInt, Version};
use fluvio_smartmodule::Record;

/// Appends `records` to `out` exactly as `Vec<Record>::encode` does.
pub fn encode_records(records: &[Record], out: &mut Vec<u8>, version: Version) -> std::io::Result<()> {
    let payload: usize = records.iter().map(|r| r.value.len() + r.key.as_ref().map_or(0, |k| k.len()) + 24).sum();
    out.reserve(4 + payload);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        let value_len = record.value.len() as i64;
        let body = record.preamble.write_size(version)
            + record.key.write_size(version)
            + value_len.var_write_size()
            + record.value.len()
            + record.headers.var_write_size();
        (body as i64).encode_varint(out)?;
        record.preamble.encode(out, version)?;
        record.key.encode(out, version)?;
        value_len.encode_varint(out)?;
        out.extend_from_slice(record.value.as_ref());
        record.headers.encode_varint(out)?;
    }
    Ok(())
}

/// Appends a `SmartModuleOutput { successes: records, error: None }` exactly as its `Encoder` does.
pub fn encode_output(records: &[Record], out: &mut Vec<u8>, version: Version) -> std::io::Result<()> {
    encode_records(records, out, version)?;
    false.encode(out, version) // error: None
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluvio_smartmodule::dataplane::smartmodule::SmartModuleOutput;
    use fluvio_smartmodule::{RecordData, SMARTMODULE_TIMESTAMPS_VERSION};
    use proptest::prelude::*;

    fn record(key: Option<Vec<u8>>, value: Vec<u8>, offset: i64, timestamp: i64, headers: i64) -> Record {
        let mut record = Record::new(value);
        record.key = key.map(RecordData::from);
        record.preamble.set_offset_delta(offset);
        record.preamble.set_timestamp_delta(timestamp);
        record.headers = headers;
        record
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            prop_oneof![proptest::collection::vec(any::<u8>(), 0..300), (0usize..300_000).prop_map(|n| vec![7u8; n])],
            // fluvio-protocol's varint is a 32-bit zigzag (`num >> 31`): it never terminates for deltas
            // outside i32, which record offset and timestamp deltas never are.
            any::<i32>().prop_map(i64::from),
            any::<i32>().prop_map(i64::from),
            0i64..4,
        )
            .prop_map(|(k, v, o, t, h)| record(k, v, o, t, h))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_fluvio_protocol_byte_for_byte(records in proptest::collection::vec(arb_record(), 0..6)) {
            for version in [0, SMARTMODULE_TIMESTAMPS_VERSION] {
                let mut ours = Vec::new();
                encode_records(&records, &mut ours, version).unwrap();
                let mut theirs = Vec::new();
                records.encode(&mut theirs, version).unwrap();
                prop_assert_eq!(&ours, &theirs);

                let mut ours = Vec::new();
                encode_output(&records, &mut ours, version).unwrap();
                let mut theirs = Vec::new();
                SmartModuleOutput { successes: records.clone(), error: None }.encode(&mut theirs, version).unwrap();
                prop_assert_eq!(ours, theirs);
            }
        }
    }
}
