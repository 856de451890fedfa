-- Rate limits shared by every gateway: each limit's "theoretical arrival time" (GCRA), in
-- milliseconds of the database server's clock, so gateways whose clocks differ still agree.
-- Keys are SHA-256 hashes of the limit's name and subject (an address block, a site and email),
-- so the addresses strangers type are not kept in clear.
CREATE TABLE rate_limits (
    key bytea PRIMARY KEY,
    tat bigint NOT NULL
);
CREATE INDEX rate_limits_by_tat ON rate_limits (tat);
