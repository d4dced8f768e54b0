//! NVMe Qualified Name validation (NVMe base spec 4.5).

use nvme_spec::fabrics::NQN_MAX_LEN;

const UUID_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// Checks `nqn` against the two formats the spec allows:
/// `nqn.yyyy-mm.reverse.domain[:anything]` and
/// `nqn.2014-08.org.nvmexpress:uuid:<uuid>`.
/// The error says what is wrong, for config and Connect diagnostics.
pub fn validate_nqn(nqn: &str) -> Result<(), String> {
    if nqn.len() > NQN_MAX_LEN {
        return Err(format!(
            "NQN is {} bytes long; the limit is {NQN_MAX_LEN}",
            nqn.len()
        ));
    }
    if let Some(uuid) = nqn.strip_prefix(UUID_PREFIX) {
        return validate_uuid_text(uuid).map_err(|e| format!("NQN {nqn:?}: {e}"));
    }
    let rest = nqn
        .strip_prefix("nqn.")
        .ok_or_else(|| format!("NQN {nqn:?} must start with \"nqn.\""))?;
    let date = rest
        .get(..7)
        .ok_or_else(|| format!("NQN {nqn:?} lacks the yyyy-mm date"))?;
    let b = date.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && b[4] == b'-' && digits(5..7)) {
        return Err(format!(
            "NQN {nqn:?}: expected a yyyy-mm date after \"nqn.\", found {date:?}"
        ));
    }
    let month = (b[5] - b'0') * 10 + (b[6] - b'0');
    if !(1..=12).contains(&month) {
        return Err(format!("NQN {nqn:?}: month {month} is not 01..12"));
    }
    let after = &rest[7..];
    let domain_and_more = after.strip_prefix('.').ok_or_else(|| {
        format!("NQN {nqn:?}: expected '.' and a reverse domain name after the date")
    })?;
    let domain = domain_and_more.split(':').next().unwrap_or("");
    if domain.is_empty() {
        return Err(format!("NQN {nqn:?}: the reverse domain name is empty"));
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "NQN {nqn:?}: domain label {label:?} is not a valid DNS label"
            ));
        }
    }
    if nqn.chars().any(|c| c.is_control()) {
        return Err(format!("NQN {nqn:?} contains control characters"));
    }
    Ok(())
}

fn validate_uuid_text(uuid: &str) -> Result<(), String> {
    let groups: Vec<&str> = uuid.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(format!("{uuid:?} is not a UUID (8-4-4-4-12 hex digits)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_forms() {
        for nqn in [
            "nqn.2014-08.org.nvmexpress.discovery",
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "nqn.2024-01.com.example:host-1:with:colons",
        ] {
            assert_eq!(validate_nqn(nqn), Ok(()), "{nqn}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for (nqn, why) in [
            ("iqn.2016-06.io.spdk:x", "must start"),
            ("nqn.16-06.io.spdk:x", "date"),
            ("nqn.2016-13.io.spdk:x", "month 13"),
            ("nqn.2016-06:x", "expected '.'"),
            ("nqn.2016-06.io..spdk:x", "label"),
            ("nqn.2016-06.io_x:y", "label"),
            ("nqn.2014-08.org.nvmexpress:uuid:1234", "not a UUID"),
        ] {
            let e = validate_nqn(nqn).unwrap_err();
            assert!(e.contains(why), "{nqn}: {e}");
        }
        let long = format!("nqn.2016-06.io.spdk:{}", "a".repeat(300));
        assert!(validate_nqn(&long).unwrap_err().contains("limit"));
    }
}
