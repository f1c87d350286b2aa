--
-- PostgreSQL database dump
--

\restrict 5c1c00LjXuDGgvBnYCo2RyrEU9PivNMkP0Ls7XfjjiQP5edZiGsTCqPfk5aziLT

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: teamv3; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA teamv3;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: audit_head; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.audit_head (
    id bigint NOT NULL,
    seq bigint NOT NULL,
    key_epoch bigint NOT NULL,
    last_mac bytea NOT NULL,
    mac bytea NOT NULL,
    CONSTRAINT audit_head_id_check CHECK ((id = 1)),
    CONSTRAINT audit_head_key_epoch_check CHECK ((key_epoch >= 1)),
    CONSTRAINT audit_head_last_mac_check CHECK ((length(last_mac) = 32)),
    CONSTRAINT audit_head_mac_check CHECK ((length(mac) = 32)),
    CONSTRAINT audit_head_seq_check CHECK ((seq >= 1))
);


--
-- Name: audit_record; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.audit_record (
    seq bigint NOT NULL,
    at bigint NOT NULL,
    action text NOT NULL COLLATE pg_catalog."C",
    profile text COLLATE pg_catalog."C",
    environment text COLLATE pg_catalog."C",
    token_url text COLLATE pg_catalog."C",
    grant_type text COLLATE pg_catalog."C",
    outcome text NOT NULL COLLATE pg_catalog."C",
    http_status bigint,
    oauth_error text COLLATE pg_catalog."C",
    attempts bigint,
    duration_ms bigint,
    token_type text COLLATE pg_catalog."C",
    expires_in bigint,
    expires_at bigint,
    request_id text COLLATE pg_catalog."C",
    token_fingerprint text COLLATE pg_catalog."C",
    detail text COLLATE pg_catalog."C",
    mac bytea NOT NULL,
    key_epoch bigint DEFAULT 1 NOT NULL,
    previous_key_mac bytea,
    member text COLLATE pg_catalog."C",
    signature bytea,
    CONSTRAINT audit_record_key_epoch_check CHECK ((key_epoch >= 1)),
    CONSTRAINT audit_record_mac_check CHECK ((length(mac) = 32)),
    CONSTRAINT audit_record_previous_key_mac_check CHECK (((previous_key_mac IS NULL) OR (length(previous_key_mac) = 32))),
    CONSTRAINT audit_record_signature_check CHECK (((signature IS NULL) OR (length(signature) = 64)))
);


--
-- Name: environment; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.environment (
    name text NOT NULL COLLATE pg_catalog."C",
    uid bytea NOT NULL,
    token_url text NOT NULL COLLATE pg_catalog."C",
    api_base text COLLATE pg_catalog."C",
    created_at text NOT NULL COLLATE pg_catalog."C",
    mac bytea NOT NULL,
    CONSTRAINT environment_mac_check CHECK ((length(mac) = 32)),
    CONSTRAINT environment_uid_check CHECK ((length(uid) = 16))
);


--
-- Name: key_slot; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.key_slot (
    member text NOT NULL COLLATE pg_catalog."C",
    key_epoch bigint NOT NULL,
    sealed bytea NOT NULL,
    mac bytea NOT NULL,
    endorsement bytea,
    CONSTRAINT key_slot_endorsement_check CHECK (((endorsement IS NULL) OR (length(endorsement) = 32))),
    CONSTRAINT key_slot_key_epoch_check CHECK ((key_epoch >= 1)),
    CONSTRAINT key_slot_mac_check CHECK ((length(mac) = 32)),
    CONSTRAINT key_slot_sealed_check CHECK ((length(sealed) = 144))
);


--
-- Name: member; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.member (
    name text NOT NULL COLLATE pg_catalog."C",
    uid bytea NOT NULL,
    kind text NOT NULL COLLATE pg_catalog."C",
    box_public_key bytea NOT NULL,
    sign_public_key bytea NOT NULL,
    added_seq bigint NOT NULL,
    removed_seq bigint,
    created_at text NOT NULL COLLATE pg_catalog."C",
    mac bytea NOT NULL,
    CONSTRAINT member_added_seq_check CHECK ((added_seq >= 1)),
    CONSTRAINT member_box_public_key_check CHECK ((length(box_public_key) = 32)),
    CONSTRAINT member_check CHECK (((removed_seq IS NULL) OR (removed_seq > added_seq))),
    CONSTRAINT member_kind_check CHECK ((kind = ANY (ARRAY['passphrase'::text, 'recipient'::text]))),
    CONSTRAINT member_mac_check CHECK ((length(mac) = 32)),
    CONSTRAINT member_sign_public_key_check CHECK ((length(sign_public_key) = 32)),
    CONSTRAINT member_uid_check CHECK ((length(uid) = 16))
);


--
-- Name: profile; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.profile (
    id bigint NOT NULL,
    uid bytea NOT NULL,
    name text NOT NULL COLLATE pg_catalog."C",
    client_id text NOT NULL COLLATE pg_catalog."C",
    username text COLLATE pg_catalog."C",
    grant_type text NOT NULL COLLATE pg_catalog."C",
    scope text COLLATE pg_catalog."C",
    environment text NOT NULL COLLATE pg_catalog."C",
    client_secret_version bigint NOT NULL,
    password_version bigint,
    created_at text NOT NULL COLLATE pg_catalog."C",
    updated_at text NOT NULL COLLATE pg_catalog."C",
    mac bytea NOT NULL,
    CONSTRAINT profile_check CHECK (((grant_type = 'password'::text) = (username IS NOT NULL))),
    CONSTRAINT profile_check1 CHECK (((grant_type = 'password'::text) = (password_version IS NOT NULL))),
    CONSTRAINT profile_client_secret_version_check CHECK ((client_secret_version >= 1)),
    CONSTRAINT profile_grant_type_check CHECK ((grant_type = ANY (ARRAY['password'::text, 'client_credentials'::text]))),
    CONSTRAINT profile_mac_check CHECK ((length(mac) = 32)),
    CONSTRAINT profile_password_version_check CHECK ((password_version >= 1)),
    CONSTRAINT profile_uid_check CHECK ((length(uid) = 16))
);


--
-- Name: profile_id_seq; Type: SEQUENCE; Schema: teamv3; Owner: -
--

ALTER TABLE teamv3.profile ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY (
    SEQUENCE NAME teamv3.profile_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: retired_audit_key; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.retired_audit_key (
    key_epoch bigint NOT NULL,
    nonce bytea NOT NULL,
    sealed bytea NOT NULL,
    CONSTRAINT retired_audit_key_key_epoch_check CHECK ((key_epoch >= 1)),
    CONSTRAINT retired_audit_key_nonce_check CHECK ((length(nonce) = 24)),
    CONSTRAINT retired_audit_key_sealed_check CHECK ((length(sealed) = 48))
);


--
-- Name: schema_migrations; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.schema_migrations (
    identifier text NOT NULL COLLATE pg_catalog."C",
    applied_at text NOT NULL COLLATE pg_catalog."C"
);


--
-- Name: secret_version; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.secret_version (
    profile_id bigint NOT NULL,
    field text NOT NULL COLLATE pg_catalog."C",
    version bigint NOT NULL,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    created_at text NOT NULL COLLATE pg_catalog."C",
    CONSTRAINT secret_version_ciphertext_check CHECK ((length(ciphertext) >= 17)),
    CONSTRAINT secret_version_field_check CHECK ((field = ANY (ARRAY['client_secret'::text, 'password'::text]))),
    CONSTRAINT secret_version_nonce_check CHECK ((length(nonce) = 24)),
    CONSTRAINT secret_version_version_check CHECK ((version >= 1))
);


--
-- Name: token_cache; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.token_cache (
    profile_id bigint NOT NULL,
    environment text NOT NULL COLLATE pg_catalog."C",
    environment_uid bytea NOT NULL,
    expires_at bigint NOT NULL,
    client_secret_version bigint NOT NULL,
    password_version bigint,
    nonce bytea NOT NULL,
    ciphertext bytea NOT NULL,
    CONSTRAINT token_cache_ciphertext_check CHECK ((length(ciphertext) >= 17)),
    CONSTRAINT token_cache_environment_uid_check CHECK ((length(environment_uid) = ANY (ARRAY[0, 16]))),
    CONSTRAINT token_cache_nonce_check CHECK ((length(nonce) = 24))
);


--
-- Name: vault_header; Type: TABLE; Schema: teamv3; Owner: -
--

CREATE TABLE teamv3.vault_header (
    id bigint NOT NULL,
    format_version bigint NOT NULL,
    vault_id bytea NOT NULL,
    kdf_algorithm text NOT NULL COLLATE pg_catalog."C",
    kdf_opslimit bigint NOT NULL,
    kdf_memlimit bigint NOT NULL,
    kdf_salt bytea NOT NULL,
    key_nonce bytea NOT NULL,
    wrapped_keys bytea NOT NULL,
    header_digest bytea NOT NULL,
    created_at text NOT NULL COLLATE pg_catalog."C",
    key_epoch bigint DEFAULT 1 NOT NULL,
    signed_from_seq bigint,
    CONSTRAINT vault_header_header_digest_check CHECK ((length(header_digest) = 32)),
    CONSTRAINT vault_header_id_check CHECK ((id = 1)),
    CONSTRAINT vault_header_kdf_memlimit_check CHECK ((kdf_memlimit > 0)),
    CONSTRAINT vault_header_kdf_opslimit_check CHECK ((kdf_opslimit > 0)),
    CONSTRAINT vault_header_kdf_salt_check CHECK ((length(kdf_salt) = 16)),
    CONSTRAINT vault_header_key_epoch_check CHECK ((key_epoch >= 1)),
    CONSTRAINT vault_header_key_nonce_check CHECK ((length(key_nonce) = 24)),
    CONSTRAINT vault_header_signed_from_seq_check CHECK (((signed_from_seq IS NULL) OR (signed_from_seq >= 1))),
    CONSTRAINT vault_header_vault_id_check CHECK ((length(vault_id) = 16)),
    CONSTRAINT vault_header_wrapped_keys_check CHECK ((length(wrapped_keys) = 80))
);


--
-- Data for Name: audit_head; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.audit_head (id, seq, key_epoch, last_mac, mac) FROM stdin;
1	12	2	\\xc86cb6b4a644dbb750606869f620f24622892ea77e013f1d6e9dd3a3e8b2e834	\\x979eb9f3f7a2c80985a1afe9e6cab9749b07d6aa45069b8b0dd55eebfc424ad7
\.


--
-- Data for Name: audit_record; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.audit_record (seq, at, action, profile, environment, token_url, grant_type, outcome, http_status, oauth_error, attempts, duration_ms, token_type, expires_in, expires_at, request_id, token_fingerprint, detail, mac, key_epoch, previous_key_mac, member, signature) FROM stdin;
1	1796611141244	init	\N	\N	\N	\N	ok	\N	\N	\N	\N	\N	\N	\N	\N	\N	kdf=interactive	\\x87a34283bfb43a6d29045a4c68cf90a0a5c1487f182c88f8e393b4bb2b9b8efd	1	\N	owner	\\x79fe7cf4783a7d1244422385a14452a2bf7fd2330e5bb8e50a44a8c8ca88c45f7cd64d783a1dd40aeca69e3eb95f4c8acb78fa6772b6ff0d6b925871a92aea0d
2	1796611141358	env-add	\N	local	http://127.0.0.1:39885/as/token.oauth2	\N	ok	\N	\N	\N	\N	\N	\N	\N	\N	\N	\N	\\x47c048d2d6048ad41b1a19633010c0bb8783bdaef36603d47286002bba66f671	1	\N	owner	\\x7ac7a52fe4c01549e4a826f9397d5e02af66f754455483075137d2f0bf3bb8458652280e6c527f9586975b6c379443bc43097450bf6141ea4364fb81f43b880e
3	1796611141460	add	pw	local	\N	\N	ok	\N	\N	\N	\N	\N	\N	\N	\N	\N	grant=password	\\x79ca391b833b89444e142978df42dfed97b37c0b99481ca79303f4de54a289eb	1	\N	owner	\\xf0ab6312efb8892247a7b1e8dab1c8855d325f96d043c23043bf91ac55d20e84f0ce85a22eac6803b5a8b5c2d836d9fec65963495689fffe190fefa89b4e080a
4	1796611141532	add	cc	local	\N	\N	ok	\N	\N	\N	\N	\N	\N	\N	\N	\N	grant=client_credentials	\\x5d446d26af7669eca1adeae45909d9906a3f5494f6b55e48e7d3d62e6739037e	1	\N	owner	\\x3cebdf4df895d36d5bd2ab17deac05bfe96794e56d015fbdd8b3f0fbdab6e8473adcd9137800cd573faa1109e6f5e39ec579db1a7225174d39550e42a7ecd403
5	1796611141632	rotate	pw	local	\N	\N	ok	\N	\N	\N	\N	\N	\N	\N	\N	\N	client_secret=v2	\\x9f975010814890215e3196bd0f827e9243afc41c6669cef974952a99f60f3843	1	\N	owner	\\x37701f554fa7f1c761a163f226d8eb1dd26d143f865d84f6dbd0a9118d12c214dd7124f29e6f0bc1b964b3bf49984ed8ed172b09f41d9fd244c7111fef59d105
6	1796611141785	member-add	\N	\N	\N	\N	ok	\N	\N	\N	\N	\N	\N	\N	\N	\N	member=alice	\\xbddd7aae9e2ce6efa6e48d84ab2402c129072bb0fb7106579eb3d5a3e65cd70d	1	\N	owner	\\x935fee22a6855bf16087728e3fdab692a81fa7d04451778f0cd175e4a5e80d15d3623c2ee0589fc271cb40efa497b6b89ce743a8267c400a77b9111089dba501
7	1796611141902	member-add	\N	\N	\N	\N	ok	\N	\N	\N	\N	\N	\N	\N	\N	\N	member=bob	\\xff065235fc0e7b3e7ffa637581c844b749604d39b674e096826e5067b7c56dc5	1	\N	owner	\\xb7efca5e49c82ecca8fb05fb2ff5548577901f412a11dc064d8b72754aa6c8062699c500bf2bbe370868fe5ba7190cc6e41c5961896704c13900b526a2556a02
8	1796611142020	token	pw	local	http://127.0.0.1:39885/as/token.oauth2	password	ok	200	\N	1	25	Bearer	3600	1796614742	e700a1fe-7c9f-4e31-bd8c-548dd1714bd8	4b7324648edb34d52116d80da3899d67	\N	\\x49475b2922817811058b4664a206b1f39a24521905289ff20bc3524b0e269b4e	1	\N	owner	\\xf7db550acc3e216ff97a6146b0d494898fda8d6dd6baf72b21598887c7b38c1760e0b5f1ce0e577900329ad11053bc4a0d3b8d1fe0f4c55ea1c1726febc76902
9	1796611142136	member-add	\N	\N	\N	\N	ok	\N	\N	\N	\N	\N	\N	\N	\N	\N	member=carol	\\x41f66742a0da4220e119358befc25793cb741a859924696a7d91af8e0a1addfc	1	\N	alice	\\xa033fa893c3707f61558e19df9572b73cdc43684854b6ed4f7da350218cb75029bb4631d4f50971d189d399ea7dd88df55767681ef73a1fdf7cb7677ee0c7409
10	1796611142275	token	cc	local	http://127.0.0.1:39885/as/token.oauth2	client_credentials	ok	200	\N	1	23	Bearer	3600	1796614742	e8ae812b-8bf8-4778-b6e1-c9461bd2d6d2	451176afe771ab4f1da53e5ae9cd1c8c	\N	\\xbdd5841a41f2e2b58baa8c86cdc17ed4c035ec352395f27e348259b0b206ed7f	1	\N	alice	\\x9c89942192dc222e56eb1261a51d2479076c6d97f8e49a899447995ac7393997b12c7f2170023e563bcbd809936b7ab8b73aa9e32e289a3a7d8bb55632235d00
11	1796611142378	member-remove	\N	\N	\N	\N	ok	\N	\N	\N	\N	\N	\N	\N	\N	\N	member=bob resealed=4 epoch=2	\\xf1671f1764da59a80378b4bcb291e16245349ffb96a79c149226388c041a41e7	2	\\x523009f3f8532b620f2db130d17058ed748acf3a4dc3cdc728704487848752cc	owner	\\x5a66c35526096b8ef214d25d634e6c753293a587dba2b5d999fd90f22caf45b3c409a8bb1eed42b9d51b702a34fa960de96950e86f13913748538ce1282d6a0b
12	1796611142512	token	pw	local	http://127.0.0.1:39885/as/token.oauth2	password	ok	200	\N	1	17	Bearer	3600	1796614742	e4ae263e-1e72-4dec-b3bb-a6442af035ef	057a28d11195ecd27c69c1c7c5afad7b	\N	\\xc86cb6b4a644dbb750606869f620f24622892ea77e013f1d6e9dd3a3e8b2e834	2	\N	carol	\\x5ab96d0604b803c2bb2aa222504912026c6369adfcf421e83ae61940fff6b8b6987c9039a4bff4b25abbfe1ecf21a2ec423fa10e6fbcea9dd934a2beca4eda0c
\.


--
-- Data for Name: environment; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.environment (name, uid, token_url, api_base, created_at, mac) FROM stdin;
local	\\x3048eb6e1863b6fe43c5701723962071	http://127.0.0.1:39885/as/token.oauth2	http://127.0.0.1:39885/v2/captain/	2026-12-07T02:39:01Z	\\x6a64a4c8e016c68f78f91a38e7fe4f23131b260ce0c38320299ca63650188646
\.


--
-- Data for Name: key_slot; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.key_slot (member, key_epoch, sealed, mac, endorsement) FROM stdin;
alice	2	\\x2b038387d7a309672b355ad287ca36994112e78c25e2304d9c13f236ad149b221704ad9ffbfcd4023fa1109381a4aaddbc7338033b7601bfdecc38f643776575dfb22be694b74c365df1fd81cd5f5296b6633bfa62676a63bccd62375da6af624925be5521c2626fe945fb52a9fed98a555465abaeaeca327ff2d2ff0761702ebc2f63f905221be89ff77bcaf27feb99	\\xd6b75f74c649284df5e56759470e1c47087f102b52a335e90e8471ce40c2594a	\N
carol	2	\\xb59ecdd645f553dae8299658b46e380ae87b740e63b804803ed9d93e41df027ea6249e7a7cbf71317aafd81d079d3e741bf69f26f3ff22f3506f1fa17f00beb9e6ffd183083191d33a8422dfda36d4554843d42fc14e1053ed2b87b6d8ee02b10e315bc50ec14256a276690e679b74588a8b6fda245bf824630a5a6c3c2f29888f3d529232061d51b275618388c7e151	\\x72de0d74f1a2dd0a104b728e5c62499782bd9f9d0143f27eab0bb33363034ae4	\N
owner	2	\\x1f696cae63cc90ae2b9cb2d76eb607d29b6f71ed0b4809b647f8a574e72e101df6e384c7287aef684d31c8f5cdf62d76aae1ce1c208de7af26904be10311752411be991e5d50d2acf2dc15ddbfc4562b08c78f062f18e35db91b0957df869f63267332cc172f79ee53ceda3fa8662e3d74ba07d486c0d97a72746be621ae92e22ea621b02251983ffe4ad0d535c8fc06	\\x0065fc7d59adcddc6e9bc391790f42fbdce6870d3339e4eee18322aed6c2a315	\\x28d2001ab307ca7ac7705a24a14dbc6fd62e7a268637903f140213e363ea8fde
\.


--
-- Data for Name: member; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.member (name, uid, kind, box_public_key, sign_public_key, added_seq, removed_seq, created_at, mac) FROM stdin;
alice	\\x965c30498d0fc646e6f8fc7a70c03c62	recipient	\\x5edf7ead33093fbed4808f67384901285eef666e5dc7e303d124dc447fe1206d	\\x9ae2eaec304d4b087842fa54117202475028652e2f87ea4abe665459ab223ed1	6	\N	2026-12-07T02:39:01Z	\\x91dacb4aff295271dc6a5aa8d4ed26e8aeac5cabef9429ede9e5b276e6725da6
bob	\\xb4c399e5c253afd2bdd8a38489f71a9b	recipient	\\x032d4ca96d3d42353fddb6f1343b8d1ca9b96fe11b3793204c3815a7c5e1c564	\\x8453cdccf36f5d0f4800ac520ead6cb89047519ff66975288abdd11ba8c117af	7	11	2026-12-07T02:39:01Z	\\x39f9ada831f5f52be97453ba0d8dc33a366b5fd7e573f4bc7d54cd34069b57ee
carol	\\x0434382e0e30cfa8acec7e5d3ad4ebc6	recipient	\\x53beabb208bd18356e253cf7cf868cfa01e85f0338be9f17e1df2f1401238146	\\x16ac1e69587979fe2cc694407368d611e95048050b556d45b944c93b6b910e3d	9	\N	2026-12-07T02:39:02Z	\\x7bcef8b1d83cb28e302a9d152a96dc0639e45af69bf241698b4232416a07a556
owner	\\xdd12ae69ffd0b4a91043a5b79708ae8d	passphrase	\\x75806ca4b4ca2b2abd011fd803c07a191f761db8fdccb5bc7160183b8fd21f05	\\x7e85bafb612d20a08dacbebce331c133da471641ab153c60912036fcadb9ae73	1	\N	2026-12-07T02:39:01Z	\\x077805346b73d27c4fff704e8be387837fd8ef086e29578d7877aa8283b08a4e
\.


--
-- Data for Name: profile; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.profile (id, uid, name, client_id, username, grant_type, scope, environment, client_secret_version, password_version, created_at, updated_at, mac) FROM stdin;
1	\\xe300aa483c8aef6ad96a200a5dd06c55	pw	client-pw	api-user@example.com	password	\N	local	2	1	2026-12-07T02:39:01Z	2026-12-07T02:39:01Z	\\x954ea0e4e94c8946b24d3309eb9b3ce78b189b653295f9bb3543c7b794789dbd
2	\\x515f378dfe8712d27b0a8cf24117b808	cc	client-cc	\N	client_credentials	gbg.token	local	1	\N	2026-12-07T02:39:01Z	2026-12-07T02:39:01Z	\\xf373280674554f44a834ffe2af5e11e957cf5e7cb98dc135e1e063cb78ea0993
\.


--
-- Data for Name: retired_audit_key; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.retired_audit_key (key_epoch, nonce, sealed) FROM stdin;
1	\\x60604dd5e10f486b93285a7c125e0ef6d734870c1bdebdbf	\\xa92311e5a80ed023ba151bef854c22bc0ac4022cce473aa96d7c951cb9ea2281023f9efe330e81c50fc5bb632e3f7860
\.


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.schema_migrations (identifier, applied_at) FROM stdin;
0001_vault	2026-12-07T02:39:18Z
\.


--
-- Data for Name: secret_version; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.secret_version (profile_id, field, version, nonce, ciphertext, created_at) FROM stdin;
1	client_secret	1	\\x31cce7dcba999bbbc8b77d627d27512bee60ef7ad7f757c2	\\xfbb8148f8317c70e278cd2c38db0b15affd5159d4692e69e2635dda0912e9f4adc0351	2026-12-07T02:39:01Z
1	client_secret	2	\\x110bf2f4218667093aa9a087c42bcfd01c4d4c76a94db91a	\\xcfd95b46b494241a5501bcfca89b4395cbb0129dabc7309a8c188d4fc900e3defef627	2026-12-07T02:39:01Z
1	password	1	\\xd79122a9827975921483729bda917bf616ae43f665d7bffe	\\x4ee0a71c64846eba85fead2cc75fef472a61255228fd8f88b2f53e03ad33f10c26aa	2026-12-07T02:39:01Z
2	client_secret	1	\\x5db881c12e343b70dad39df28be76059feb82c24c3c74e26	\\x06a46c7ff55880c4f3f5176921dc4eef5e5cf913adca3367b290c35b31ab6949e306	2026-12-07T02:39:01Z
\.


--
-- Data for Name: token_cache; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.token_cache (profile_id, environment, environment_uid, expires_at, client_secret_version, password_version, nonce, ciphertext) FROM stdin;
1	local	\\x3048eb6e1863b6fe43c5701723962071	1796614742	2	1	\\xac45fd1aefe7c68ce33cbf249375aed75a7ed2c51c71b714	\\x1b0a311074c0d44408576bbbcc29dab59b2839cb39df112647f015b9a2697835cf1ad4c570ee540c2adad3af48070242e26357e66da0be8baf3b3d2682d553bfb1299af65433ba2f94d33251042d387ad1dd74fbff
\.


--
-- Data for Name: vault_header; Type: TABLE DATA; Schema: teamv3; Owner: -
--

COPY teamv3.vault_header (id, format_version, vault_id, kdf_algorithm, kdf_opslimit, kdf_memlimit, kdf_salt, key_nonce, wrapped_keys, header_digest, created_at, key_epoch, signed_from_seq) FROM stdin;
1	3	\\x7f8a3b5527058bcb0b6fc58ee52f1f55	argon2id13	1	8192	\\x311017b2ca319fd15515e57facc6fa1c	\\xd76c439543d43d307445d57996268e6364301854aedfce84	\\x1d0e05936a4864e367ed318d260d448500a76de1723b0fffdccf73cf4cc883710d99a3bdd851322d232ebce6488a150469025514fc985c1ae5ccd3424e968bafe0db9b58540df563cb7b0b3103a072fe	\\x8f5e09d670e9b6ab7420b94f8207f15e678b86290d1b3e1cfa841ca89916eacc	2026-12-07T02:39:01Z	2	1
\.


--
-- Name: profile_id_seq; Type: SEQUENCE SET; Schema: teamv3; Owner: -
--

SELECT pg_catalog.setval('teamv3.profile_id_seq', 3, false);


--
-- Name: audit_head audit_head_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.audit_head
    ADD CONSTRAINT audit_head_pkey PRIMARY KEY (id);


--
-- Name: audit_record audit_record_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.audit_record
    ADD CONSTRAINT audit_record_pkey PRIMARY KEY (seq);


--
-- Name: environment environment_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.environment
    ADD CONSTRAINT environment_pkey PRIMARY KEY (name);


--
-- Name: environment environment_uid_key; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.environment
    ADD CONSTRAINT environment_uid_key UNIQUE (uid);


--
-- Name: key_slot key_slot_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.key_slot
    ADD CONSTRAINT key_slot_pkey PRIMARY KEY (member);


--
-- Name: member member_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.member
    ADD CONSTRAINT member_pkey PRIMARY KEY (name);


--
-- Name: member member_uid_key; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.member
    ADD CONSTRAINT member_uid_key UNIQUE (uid);


--
-- Name: profile profile_name_key; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.profile
    ADD CONSTRAINT profile_name_key UNIQUE (name);


--
-- Name: profile profile_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.profile
    ADD CONSTRAINT profile_pkey PRIMARY KEY (id);


--
-- Name: profile profile_uid_key; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.profile
    ADD CONSTRAINT profile_uid_key UNIQUE (uid);


--
-- Name: retired_audit_key retired_audit_key_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.retired_audit_key
    ADD CONSTRAINT retired_audit_key_pkey PRIMARY KEY (key_epoch);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (identifier);


--
-- Name: secret_version secret_version_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.secret_version
    ADD CONSTRAINT secret_version_pkey PRIMARY KEY (profile_id, field, version);


--
-- Name: token_cache token_cache_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.token_cache
    ADD CONSTRAINT token_cache_pkey PRIMARY KEY (profile_id, environment);


--
-- Name: vault_header vault_header_pkey; Type: CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.vault_header
    ADD CONSTRAINT vault_header_pkey PRIMARY KEY (id);


--
-- Name: audit_record_at; Type: INDEX; Schema: teamv3; Owner: -
--

CREATE INDEX audit_record_at ON teamv3.audit_record USING btree (at);


--
-- Name: audit_record_member; Type: INDEX; Schema: teamv3; Owner: -
--

CREATE INDEX audit_record_member ON teamv3.audit_record USING btree (member, seq);


--
-- Name: audit_record_profile_at; Type: INDEX; Schema: teamv3; Owner: -
--

CREATE INDEX audit_record_profile_at ON teamv3.audit_record USING btree (profile, seq);


--
-- Name: key_slot key_slot_member_fkey; Type: FK CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.key_slot
    ADD CONSTRAINT key_slot_member_fkey FOREIGN KEY (member) REFERENCES teamv3.member(name);


--
-- Name: secret_version secret_version_profile_id_fkey; Type: FK CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.secret_version
    ADD CONSTRAINT secret_version_profile_id_fkey FOREIGN KEY (profile_id) REFERENCES teamv3.profile(id) ON DELETE CASCADE;


--
-- Name: token_cache token_cache_profile_id_fkey; Type: FK CONSTRAINT; Schema: teamv3; Owner: -
--

ALTER TABLE ONLY teamv3.token_cache
    ADD CONSTRAINT token_cache_profile_id_fkey FOREIGN KEY (profile_id) REFERENCES teamv3.profile(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--

\unrestrict 5c1c00LjXuDGgvBnYCo2RyrEU9PivNMkP0Ls7XfjjiQP5edZiGsTCqPfk5aziLT

