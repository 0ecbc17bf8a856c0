module qkeyd.invalid/tlsprobe

go 1.24
