/// Every byte layout of FORMAT.md that is not the database schema: the additional data of
/// each AEAD and the input of each MAC, digest and signature, one pure function per
/// construction, named and commented with its section. The domain code composes these and
/// builds no layout of its own; `Tests/VaultCoreTests/TestVectorTests.swift` checks each
/// against the language-neutral vectors in `testvectors/`.
///
/// Inputs are the values the section names, in its order; keys are passed where a MAC is
/// keyed. The encoding of every value is §2's (``CanonicalEncoder``), the labels are
/// ``Labels``.
public enum Format {}

// MARK: - §4 The header

extension Format {
    /// §4.2 The additional data of the key-wrapping AEAD: formats 3 and 4 wrap the owner's
    /// identity (a `rekey` does not change it, so no key epoch); format 2 bound the key epoch
    /// (§9.2); format 1 (§9.3) had none.
    public static func wrapAD(formatVersion: UInt32, vaultID: [UInt8], keyEpoch: Int64, kdfAlgorithm: String,
                              opslimit: UInt64, memlimit: UInt64, salt: [UInt8]) -> [UInt8] {
        var e = CanonicalEncoder(label: formatVersion == 1 ? Labels.V1.wrapAD : formatVersion == 2 ? Labels.wrapAD : Labels.wrapADV3)
        e.u32(formatVersion)
        e.data(vaultID)
        if formatVersion == 2 { e.i64(keyEpoch) }
        e.str(kdfAlgorithm)
        e.u64(opslimit)
        e.u64(memlimit)
        e.data(salt)
        return e.bytes
    }

    /// §4.3 The header digest over every field (§9 for formats 1 and 2): unkeyed BLAKE2b-256.
    public static func headerDigest(formatVersion: UInt32, vaultID: [UInt8], keyEpoch: Int64, signedFromSeq: Int64,
                                    kdfAlgorithm: String, opslimit: UInt64, memlimit: UInt64, salt: [UInt8],
                                    keyNonce: [UInt8], wrappedKeys: [UInt8]) -> [UInt8] {
        var e = CanonicalEncoder(label: formatVersion == 1 ? Labels.V1.headerDigest : formatVersion == 2 ? Labels.headerDigest : Labels.headerDigestV3)
        e.u32(formatVersion)
        e.data(vaultID)
        if formatVersion != 1 { e.i64(keyEpoch) }
        if formatVersion >= 3 { e.i64(signedFromSeq) }
        e.str(kdfAlgorithm)
        e.u64(opslimit)
        e.u64(memlimit)
        e.data(salt)
        e.data(keyNonce)
        e.data(wrappedKeys)
        return Sodium.blake2b(e.bytes, length: 32)
    }
}

// MARK: - §5.3 Metadata MACs

extension Format {
    /// §5.3 The profile MAC (metadata key): every field that says where its secrets go, and
    /// the current version of each secret.
    public static func profileMAC(vaultID: [UInt8], uid: [UInt8], name: String, clientID: String, username: String?,
                                  grantType: String, scope: String?, environment: String, clientSecretVersion: Int64,
                                  passwordVersion: Int64?, key: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.profileMAC)
        e.data(vaultID)
        e.data(uid)
        e.str(name)
        e.str(clientID)
        e.optionalStr(username)
        e.str(grantType)
        e.optionalStr(scope)
        e.str(environment)
        e.i64(clientSecretVersion)
        e.optionalI64(passwordVersion)
        return Sodium.blake2b(e.bytes, key: key, length: 32)
    }

    /// §5.3 The environment MAC (metadata key).
    public static func environmentMAC(vaultID: [UInt8], uid: [UInt8], name: String, tokenURL: String, apiBase: String?,
                                      key: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.environmentMAC)
        e.data(vaultID)
        e.data(uid)
        e.str(name)
        e.str(tokenURL)
        e.optionalStr(apiBase)
        return Sodium.blake2b(e.bytes, key: key, length: 32)
    }
}

// MARK: - §5 Sealed secrets and cached tokens

extension Format {
    /// §5.1 The additional data of a sealed secret version: its vault, profile, field and version.
    public static func secretAD(vaultID: [UInt8], profileUID: [UInt8], field: String, version: Int64) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.secretAD)
        e.data(vaultID)
        e.data(profileUID)
        e.str(field)
        e.i64(version)
        return e.bytes
    }

    /// §5.2 The additional data of a cached token: its vault, profile, the environment's
    /// whole definition (name, the environment row's `uid`, token URL, API base), its expiry
    /// and the secret versions it was fetched with.
    public static func tokenAD(vaultID: [UInt8], profileUID: [UInt8], environmentName: String, environmentUID: [UInt8],
                               tokenURL: String, apiBase: String?, expiresAt: Int64, clientSecretVersion: Int64,
                               passwordVersion: Int64?) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.tokenAD)
        e.data(vaultID)
        e.data(profileUID)
        e.str(environmentName)
        e.data(environmentUID)
        e.str(tokenURL)
        e.optionalStr(apiBase)
        e.i64(expiresAt)
        e.i64(clientSecretVersion)
        e.optionalI64(passwordVersion)
        return e.bytes
    }

    /// §6.3 A token's fingerprint in its audit record: 16 bytes of BLAKE2b keyed by the
    /// fingerprint key, in lowercase hex.
    public static func tokenFingerprint(_ token: SecureBytes, key: SecureBytes) -> String {
        token.withUnsafeBytes { Sodium.blake2b(Array($0), key: key, length: 16) }.hexString
    }
}

// MARK: - §6 The audit trail

extension Format {
    /// §6.2 The fields of a record, in the order every record MAC covers them.
    static func encodeAuditFields(_ record: AuditRow, into e: inout CanonicalEncoder) {
        e.i64(record.at)
        e.str(record.action)
        e.optionalStr(record.profile)
        e.optionalStr(record.environment)
        e.optionalStr(record.tokenURL)
        e.optionalStr(record.grantType)
        e.str(record.outcome)
        e.optionalI64(record.httpStatus)
        e.optionalStr(record.oauthError)
        e.optionalI64(record.attempts)
        e.optionalI64(record.durationMs)
        e.optionalStr(record.tokenType)
        e.optionalI64(record.expiresIn)
        e.optionalI64(record.expiresAt)
        e.optionalStr(record.requestID)
        e.optionalStr(record.tokenFingerprint)
        e.optionalStr(record.detail)
    }

    /// §6.2 The MAC input of a record chained to `previousMAC` in key epoch `epoch`.
    static func auditMACInput(_ record: AuditRow, previousMAC: [UInt8], vaultID: [UInt8], epoch: Int64) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.auditMAC)
        e.data(vaultID)
        e.data(previousMAC)
        e.i64(record.seq)
        e.i64(epoch)
        encodeAuditFields(record, into: &e)
        return e.bytes
    }

    /// §6.2 A record's MAC (the epoch's audit MAC key).
    static func auditMAC(_ record: AuditRow, previousMAC: [UInt8], vaultID: [UInt8], epoch: Int64, key: SecureBytes) -> [UInt8] {
        Sodium.blake2b(auditMACInput(record, previousMAC: previousMAC, vaultID: vaultID, epoch: epoch), key: key, length: 32)
    }

    /// §6.4 The MAC of the chain's head: its newest record's sequence number, epoch and MAC.
    public static func auditHeadMAC(seq: Int64, epoch: Int64, lastMAC: [UInt8], vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.auditHeadMAC)
        e.data(vaultID)
        e.i64(seq)
        e.i64(epoch)
        e.data(lastMAC)
        return Sodium.blake2b(e.bytes, key: key, length: 32)
    }

    /// §6.6 The additional data sealing the audit key of `epoch` under the next epoch's.
    public static func retiredAuditKeyAD(vaultID: [UInt8], epoch: Int64) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.retiredAuditKeyAD)
        e.data(vaultID)
        e.i64(epoch)
        return e.bytes
    }

    /// §6.7 What a member signs for record `seq`: the record's MAC (which covers every field
    /// and the previous record's MAC) and the member's name.
    public static func auditSignatureInput(vaultID: [UInt8], seq: Int64, member: String, mac: [UInt8]) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.auditSignature)
        e.data(vaultID)
        e.i64(seq)
        e.str(member)
        e.data(mac)
        return e.bytes
    }
}

// MARK: - §10 Members, key slots and identities

extension Format {
    /// §10.4 A member row's MAC (metadata key of the current epoch).
    public static func memberMAC(vaultID: [UInt8], name: String, uid: [UInt8], kind: String, boxPublicKey: [UInt8],
                                 signPublicKey: [UInt8], addedSeq: Int64, removedSeq: Int64?, createdAt: String,
                                 key: SecureBytes) -> [UInt8] {
        Sodium.blake2b(memberFields(label: Labels.memberMAC, vaultID: vaultID, name: name, uid: uid, kind: kind, boxPublicKey: boxPublicKey,
                                    signPublicKey: signPublicKey, addedSeq: addedSeq, removedSeq: removedSeq, createdAt: createdAt),
                       key: key, length: 32)
    }

    /// §10.4, §10.6 A member row's fields after `label`: what its MAC and the owner's
    /// signature cover.
    static func memberFields(label: String, vaultID: [UInt8], name: String, uid: [UInt8], kind: String, boxPublicKey: [UInt8],
                             signPublicKey: [UInt8], addedSeq: Int64, removedSeq: Int64?, createdAt: String) -> [UInt8] {
        var e = CanonicalEncoder(label: label)
        e.data(vaultID)
        e.str(name)
        e.data(uid)
        e.str(kind)
        e.data(boxPublicKey)
        e.data(signPublicKey)
        e.i64(addedSeq)
        e.optionalI64(removedSeq)
        e.str(createdAt)
        return e.bytes
    }

    /// §10.3 The 32-byte binding sealed inside a key slot: the slot belongs to this vault,
    /// epoch and member, and was made by someone who held the keys. Unkeyed BLAKE2b-256 over
    /// the keys themselves.
    public static func slotBinding(vaultID: [UInt8], epoch: Int64, memberName: String, memberUID: [UInt8],
                                   boxPublicKey: [UInt8], dataKey: SecureBytes, auditKey: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.keySlot)
        e.data(vaultID)
        e.i64(epoch)
        e.str(memberName)
        e.data(memberUID)
        e.data(boxPublicKey)
        dataKey.withUnsafeBytes { e.data(Array($0)) }
        auditKey.withUnsafeBytes { e.data(Array($0)) }
        return Sodium.blake2b(e.bytes, length: 32)
    }

    /// §10.3 The owner's endorsement of its own slot, keyed by `key` (subkey 1, context
    /// `gbgvownr`, of the owner's X25519 secret key).
    public static func ownerEndorsement(vaultID: [UInt8], epoch: Int64, sealed: [UInt8], key: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.ownerSlot)
        e.data(vaultID)
        e.i64(epoch)
        e.data(sealed)
        return Sodium.blake2b(e.bytes, key: key, length: 32)
    }

    /// §10.3 The slot MAC (metadata key): this sealed box belongs to this member's row.
    public static func slotMAC(vaultID: [UInt8], memberName: String, memberUID: [UInt8], epoch: Int64, sealed: [UInt8],
                               key: SecureBytes) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.keySlotMAC)
        e.data(vaultID)
        e.str(memberName)
        e.data(memberUID)
        e.i64(epoch)
        e.data(sealed)
        return Sodium.blake2b(e.bytes, key: key, length: 32)
    }

    /// §10.6 What the owner signs for a member row (format 4): every field but the MAC.
    /// Unlike the MAC, it is not keyed by anything a member holds, so no member can change
    /// another member's keys, its name or when it was added or removed.
    public static func memberSignatureInput(vaultID: [UInt8], name: String, uid: [UInt8], kind: String, boxPublicKey: [UInt8],
                                            signPublicKey: [UInt8], addedSeq: Int64, removedSeq: Int64?, createdAt: String) -> [UInt8] {
        memberFields(label: Labels.memberSignature, vaultID: vaultID, name: name, uid: uid, kind: kind, boxPublicKey: boxPublicKey,
                     signPublicKey: signPublicKey, addedSeq: addedSeq, removedSeq: removedSeq, createdAt: createdAt)
    }

    /// §10.6 What the owner signs for a key slot (format 4): the sealed box, for this
    /// member's row and box key, in this epoch.
    public static func slotSignatureInput(vaultID: [UInt8], memberName: String, memberUID: [UInt8], boxPublicKey: [UInt8],
                                          epoch: Int64, sealed: [UInt8]) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.slotSignature)
        e.data(vaultID)
        e.str(memberName)
        e.data(memberUID)
        e.data(boxPublicKey)
        e.i64(epoch)
        e.data(sealed)
        return e.bytes
    }

    /// §10.1 A recipient's checksum: the first 4 bytes of BLAKE2b-128 over its two public keys.
    public static func recipientChecksum(boxPublicKey: [UInt8], signPublicKey: [UInt8]) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.recipientChecksum)
        e.data(boxPublicKey)
        e.data(signPublicKey)
        return Array(Sodium.blake2b(e.bytes, length: 16).prefix(4))
    }

    /// §10.2 The additional data of a sealed identity file: what the file says besides the secret.
    public static func identityAD(recipient: String, kdfAlgorithm: String, opslimit: UInt64, memlimit: UInt64, salt: [UInt8]) -> [UInt8] {
        var e = CanonicalEncoder(label: Labels.identityAD)
        e.str(recipient)
        e.str(kdfAlgorithm)
        e.u64(opslimit)
        e.u64(memlimit)
        e.data(salt)
        return e.bytes
    }
}

// MARK: - §9.3 Format 1, read only by the upgrade

extension Format {
    public enum V1 {
        /// §9.3 A format-1 profile MAC: the row's id, no uid, no secret versions.
        public static func profileMAC(vaultID: [UInt8], id: Int64, name: String, clientID: String, username: String?,
                                      grantType: String, scope: String?, environment: String, key: SecureBytes) -> [UInt8] {
            var e = CanonicalEncoder(label: Labels.V1.profileMAC)
            e.data(vaultID)
            e.i64(id)
            e.str(name)
            e.str(clientID)
            e.optionalStr(username)
            e.str(grantType)
            e.optionalStr(scope)
            e.str(environment)
            return Sodium.blake2b(e.bytes, key: key, length: 32)
        }

        /// §9.3 A format-1 environment MAC: no uid.
        public static func environmentMAC(vaultID: [UInt8], name: String, tokenURL: String, apiBase: String?, key: SecureBytes) -> [UInt8] {
            var e = CanonicalEncoder(label: Labels.V1.environmentMAC)
            e.data(vaultID)
            e.str(name)
            e.str(tokenURL)
            e.optionalStr(apiBase)
            return Sodium.blake2b(e.bytes, key: key, length: 32)
        }

        /// §9.3 A format-1 secret's additional data: the table name and the profile's row id.
        public static func secretAD(vaultID: [UInt8], profileID: Int64, field: String, version: Int64) -> [UInt8] {
            var e = CanonicalEncoder(label: Labels.V1.secretAD)
            e.data(vaultID)
            e.str(Labels.V1.secretTable)
            e.i64(profileID)
            e.str(field)
            e.i64(version)
            return e.bytes
        }

        /// §9.3 A format-1 record MAC: no key epoch.
        static func auditMAC(_ record: AuditRow, previousMAC: [UInt8], vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
            var e = CanonicalEncoder(label: Labels.V1.auditMAC)
            e.data(vaultID)
            e.data(previousMAC)
            e.i64(record.seq)
            Format.encodeAuditFields(record, into: &e)
            return Sodium.blake2b(e.bytes, key: key, length: 32)
        }

        /// §9.3 A format-1 head MAC: no key epoch.
        public static func auditHeadMAC(seq: Int64, lastMAC: [UInt8], vaultID: [UInt8], key: SecureBytes) -> [UInt8] {
            var e = CanonicalEncoder(label: Labels.V1.auditHeadMAC)
            e.data(vaultID)
            e.i64(seq)
            e.data(lastMAC)
            return Sodium.blake2b(e.bytes, key: key, length: 32)
        }
    }
}
