use super::*;

fn icreq(hpda: u8, dgst: u8, maxr2t: u32) -> [u8; IC_BYTES] {
    let mut b = super::icreq(Digests::default());
    b[10] = hpda;
    b[11] = dgst;
    b[12..16].copy_from_slice(&maxr2t.to_le_bytes());
    b
}

#[test]
fn icreq_negotiates_digests_alignment_and_r2ts() {
    let req = parse_icreq(&icreq(0, 3, 0)).unwrap();
    assert_eq!(
        req,
        IcReq {
            data_alignment_bytes: 4,
            header_digest: true,
            data_digest: true,
            max_r2t_per_command: 1
        }
    );
    assert_eq!(
        parse_icreq(&icreq(7, 0, 3)).unwrap().data_alignment_bytes,
        32
    );
    let resp = icresp(&req, 131_072);
    let ch = CommonHeader::parse(&resp);
    assert_eq!(
        (ch.pdu_type, ch.hlen, ch.plen),
        (pdu_type::ICRESP, 128, 128)
    );
    assert_eq!((resp[10], resp[11]), (0, 3), "CPDA 0, both digests");
    assert_eq!(
        u32::from_le_bytes(resp[12..16].try_into().unwrap()),
        131_072
    );
}

#[test]
fn every_icreq_field_out_of_range_is_named() {
    let cases: [(usize, u8, u16, u32); 6] = [
        (
            0,
            pdu_type::CAPSULE_CMD,
            fes::PDU_SEQUENCE_ERROR,
            field::TYPE,
        ),
        (2, 64, fes::INVALID_PDU_HEADER, field::HLEN),
        (3, 8, fes::INVALID_PDU_HEADER, field::PDO),
        (8, 1, fes::UNSUPPORTED_PARAMETER, field::ICREQ_PFV),
        (10, 32, fes::INVALID_PDU_HEADER, field::ICREQ_HPDA),
        (11, 4, fes::INVALID_PDU_HEADER, field::ICREQ_DGST),
    ];
    for (at, value, want_fes, want_fei) in cases {
        let mut b = icreq(0, 0, 0);
        b[at] = value;
        let e = parse_icreq(&b).unwrap_err();
        assert_eq!((e.fes, e.fei), (want_fes, want_fei), "byte {at} = {value}");
    }
    let mut b = icreq(0, 0, 0);
    b[4] = 129;
    assert_eq!(parse_icreq(&b).unwrap_err().fei, field::PLEN);
}

fn ch(t: u8, f: u8, hlen: u8, pdo: u8, plen: u32) -> CommonHeader {
    CommonHeader {
        pdu_type: t,
        flags: f,
        hlen,
        pdo,
        plen,
    }
}

#[test]
fn a_capsule_header_says_where_its_data_is() {
    let none = Digests::default();
    let l = check_common_header(&ch(pdu_type::CAPSULE_CMD, 0, 72, 0, 72), none, 4096).unwrap();
    assert_eq!((l.header_bytes(), l.data_len), (72, 0));
    let l =
        check_common_header(&ch(pdu_type::CAPSULE_CMD, 0, 72, 72, 72 + 512), none, 4096).unwrap();
    assert_eq!(l.data_len, 512);
    let both = Digests {
        header: true,
        data: true,
    };
    let f = flags::HDGST | flags::DDGST;
    let l = check_common_header(
        &ch(pdu_type::CAPSULE_CMD, f, 72, 76, 76 + 512 + 4),
        both,
        4096,
    )
    .unwrap();
    assert_eq!((l.header_bytes(), l.data_len, l.ddgst), (76, 512, 4));
}

#[test]
fn every_common_header_field_out_of_range_is_refused() {
    let none = Digests::default();
    let hd = Digests {
        header: true,
        data: false,
    };
    let cases = [
        (
            ch(pdu_type::ICREQ, 0, 128, 0, 128),
            none,
            fes::PDU_SEQUENCE_ERROR,
            field::TYPE,
        ),
        (
            ch(pdu_type::CAPSULE_RESP, 0, 24, 0, 24),
            none,
            fes::INVALID_PDU_HEADER,
            field::TYPE,
        ),
        (
            ch(pdu_type::R2T, 0, 24, 0, 24),
            none,
            fes::INVALID_PDU_HEADER,
            field::TYPE,
        ),
        (
            ch(0x42, 0, 24, 0, 24),
            none,
            fes::INVALID_PDU_HEADER,
            field::TYPE,
        ),
        (
            ch(pdu_type::CAPSULE_CMD, 0, 24, 0, 72),
            none,
            fes::INVALID_PDU_HEADER,
            field::HLEN,
        ),
        (
            ch(pdu_type::CAPSULE_CMD, 0, 72, 0, 71),
            none,
            fes::INVALID_PDU_HEADER,
            field::PLEN,
        ),
        (
            ch(pdu_type::CAPSULE_CMD, 0, 72, 0, 72),
            hd,
            fes::INVALID_PDU_HEADER,
            field::FLAGS,
        ),
        (
            ch(pdu_type::CAPSULE_CMD, flags::HDGST, 72, 0, 72),
            none,
            fes::INVALID_PDU_HEADER,
            field::FLAGS,
        ),
        (
            ch(pdu_type::CAPSULE_CMD, 0, 72, 8, 72),
            none,
            fes::INVALID_PDU_HEADER,
            field::PDO,
        ),
        (
            ch(pdu_type::CAPSULE_CMD, 0, 72, 80, 600),
            none,
            fes::INVALID_PDU_HEADER,
            field::PDO,
        ),
        (
            ch(pdu_type::CAPSULE_CMD, flags::DDGST, 72, 72, 600),
            none,
            fes::INVALID_PDU_HEADER,
            field::FLAGS,
        ),
        (
            ch(pdu_type::CAPSULE_CMD, 0, 72, 72, 72 + 4097),
            none,
            fes::DATA_LIMIT_EXCEEDED,
            0,
        ),
        (
            ch(pdu_type::H2C_DATA, 0, 24, 0, 24),
            none,
            fes::INVALID_PDU_HEADER,
            field::PLEN,
        ),
        (
            ch(pdu_type::H2C_TERM, 0, 24, 0, 24 + 129),
            none,
            fes::INVALID_PDU_HEADER,
            field::PLEN,
        ),
    ];
    for (h, d, want_fes, want_fei) in cases {
        let e = check_common_header(&h, d, 4096).unwrap_err();
        assert_eq!((e.fes, e.fei), (want_fes, want_fei), "{h:?}: {}", e.why);
    }
}

#[test]
fn response_r2t_and_c2h_headers_carry_their_fields_and_digests() {
    let digests = Digests {
        header: true,
        data: true,
    };
    let cqe = nvme_spec::Cqe {
        cid: 9.into(),
        ..Default::default()
    };
    let mut out = [0u8; MAX_SEND_HEADER_BYTES];
    let n = capsule_resp(&cqe, digests, &mut out);
    assert_eq!(n, 28);
    assert!(header_digest_ok(&out[..24], &out[24..28]));
    let parsed = CommonHeader::parse(&out);
    assert_eq!(
        (parsed.pdu_type, parsed.flags, parsed.plen),
        (pdu_type::CAPSULE_RESP, flags::HDGST, 28)
    );

    let n = r2t(9, 3, 0, 65536, digests, &mut out);
    assert_eq!(n, 28);
    assert_eq!(u16::from_le_bytes([out[10], out[11]]), 3, "TTAG");
    assert_eq!(u32::from_le_bytes(out[16..20].try_into().unwrap()), 65536);

    // The host asked for 32-byte alignment: the data starts at 32, not at 28.
    let pdo = c2h_data_header(9, 4096, false, digests, 32, &mut out);
    assert_eq!(pdo, 32);
    let parsed = CommonHeader::parse(&out);
    assert_eq!(parsed.pdo, 32);
    assert_eq!(parsed.plen, 32 + 4096 + 4);
    assert_eq!(parsed.flags, flags::DATA_LAST | flags::HDGST | flags::DDGST);
    assert!(header_digest_ok(&out[..24], &out[24..28]));
    let pdo = c2h_data_header(9, 512, true, Digests::default(), 4, &mut out);
    assert_eq!(pdo, 24);
    assert_eq!(out[1], flags::DATA_LAST | flags::DATA_SUCCESS);
}

#[test]
fn term_req_echoes_at_most_128_header_bytes() {
    let mut out = [0u8; DATA_HLEN + TERM_MAX_DATA];
    let fatal = Fatal::new(fes::DATA_OUT_OF_RANGE, 12, "test");
    let n = c2h_term_req(&fatal, &[0xAB; 200], &mut out);
    assert_eq!(n, 152);
    let parsed = CommonHeader::parse(&out);
    assert_eq!(
        (parsed.pdu_type, parsed.hlen, parsed.plen),
        (pdu_type::C2H_TERM, 24, 152)
    );
    assert_eq!(u16::from_le_bytes([out[8], out[9]]), fes::DATA_OUT_OF_RANGE);
    assert_eq!(u32::from_le_bytes(out[10..14].try_into().unwrap()), 12);
    assert!(out[24..152].iter().all(|&b| b == 0xAB));
}

#[test]
fn data_digest_is_crc32c_over_pieces() {
    // CRC32C("123456789") = 0xE3069283.
    let mut d = DataDigest::default();
    d.update(b"1234");
    d.update(b"56789");
    assert_eq!(d.bytes(), 0xE306_9283u32.to_le_bytes());
}
