"""Register maps of the supported energy meters (portable data; format in hal/modbus_meter.py).

Every row: (quantity, function, 0-based PDU address, type, word order, scale to the integer
unit). Sources are cited per profile (spec/standards.md §4 and spec/embedded.md §B.4 collect
them: volkszaehler/mbmd, SmartEVSE, evcc, OpenEMS, the makers' manuals). Where a fact is
unconfirmed ([K]) or the sources disagree, the profile's notes say so and which register was
chosen because it is the safer one. A quantity a meter does not have has no row (None).
Single-phase meters have only their L1 rows; their total power is the phase's power.

Scales, worked once: a float in V to dV is 1, in A to mA 3, in kW to W 3, in kWh to Wh 3, in
Hz to mHz 3, a bare power factor to permille 3; an integer in 0.1 V is already dV (0), in
0.01 A to mA is 1, in 0.1 W to W is -1, in 0.01 kWh to Wh is 1, in 0.1 kWh to Wh is 2.

max_registers: the maker's per-request limit where one is documented; otherwise the Modbus
maximum (125), the notes saying so and how long the longest planned read is.
"""
from hal.modbus_meter import ABCD, CDAB, F32, S16, S32, S64, U16, U32, U64

PROFILES = {
    # Eastron SDM630 Modbus V2: input registers, IEEE float32 high word first, in V, A, W,
    # kWh, Hz (manual "SDM630MODBUS Protocol"; mbmd sdm.go; EVerest Eastron_SDM630-V2.yaml)
    "sdm630": {
        "title": "Eastron SDM630 Modbus V2 (3-phase)",
        "defaults": {"id": 1, "baud": 9600, "parity": "N", "stopbits": 1},
        "max_registers": 80,        # the meter answers at most 40 parameters per request
        "notes": "Default parity per Eastron's register default (1 stop, no parity); one "
                 "third-party page claims even parity [K].",
        "rows": (
            ("voltage_l1", 4, 0x0000, F32, ABCD, 1),
            ("voltage_l2", 4, 0x0002, F32, ABCD, 1),
            ("voltage_l3", 4, 0x0004, F32, ABCD, 1),
            ("current_l1", 4, 0x0006, F32, ABCD, 3),
            ("current_l2", 4, 0x0008, F32, ABCD, 3),
            ("current_l3", 4, 0x000A, F32, ABCD, 3),
            ("power_l1", 4, 0x000C, F32, ABCD, 0),
            ("power_l2", 4, 0x000E, F32, ABCD, 0),
            ("power_l3", 4, 0x0010, F32, ABCD, 0),
            ("power", 4, 0x0034, F32, ABCD, 0),
            ("power_factor", 4, 0x003E, F32, ABCD, 3),
            ("frequency", 4, 0x0046, F32, ABCD, 3),
            ("energy_import", 4, 0x0048, F32, ABCD, 3),
            ("energy_export", 4, 0x004A, F32, ABCD, 3),
        ),
    },
    # Eastron SDM120-Modbus (single phase): the SDM630 protocol's L1 registers, float32 high
    # word first, V, A, W, kWh, Hz (mbmd sdm120.go after the manual "sdm120modbus_manual";
    # SmartEVSE EMConfig index 10 "Eastron1P"; evcc eastron-sdm120.yaml)
    "sdm120": {
        "title": "Eastron SDM120-Modbus (single phase)",
        "defaults": {"id": 1, "baud": 2400, "parity": "N", "stopbits": 1},
        "max_registers": 80,
        "notes": "Leaves the factory at 2400 Bd (9600 Bd by writing float 2.0 to holding "
                 "register 0x001C). Per-request limit taken from the SDM630 protocol it "
                 "shares (40 parameters) [K]; the longest planned read is 6 registers. "
                 "Total power is the phase's power: no separate L1 row.",
        "rows": (
            ("voltage_l1", 4, 0x0000, F32, ABCD, 1),
            ("current_l1", 4, 0x0006, F32, ABCD, 3),
            ("power", 4, 0x000C, F32, ABCD, 0),
            ("power_factor", 4, 0x001E, F32, ABCD, 3),
            ("frequency", 4, 0x0046, F32, ABCD, 3),
            ("energy_import", 4, 0x0048, F32, ABCD, 3),
            ("energy_export", 4, 0x004A, F32, ABCD, 3),
        ),
    },
    # Eastron SDM72D-M (v1, 3-phase): float32 high word first, only power and energy (mbmd
    # sdm72.go: "This device does not provide voltage data"; evcc eastron-sdm72.yaml reads
    # Power and Import; EVerest Eastron_SDM72DM.yaml: 1-based 30053 power, 30073/30075 energy)
    "sdm72d-m": {
        "title": "Eastron SDM72D-M (3-phase, power and energy only)",
        "defaults": {"id": 1, "baud": 9600, "parity": "N", "stopbits": 1},
        "max_registers": 80,
        "notes": "The v1 meter has no voltage, current, frequency or power-factor registers. "
                 "The SDM72D-M-2 (V2) has the full SDM630 map and also answers these three "
                 "rows, so this profile is safe on both; choose sdm630 for a V2 to get the "
                 "rest. Per-request limit from the Eastron protocol [K].",
        "rows": (
            ("power", 4, 0x0034, F32, ABCD, 0),
            ("energy_import", 4, 0x0048, F32, ABCD, 3),
            ("energy_export", 4, 0x004A, F32, ABCD, 3),
        ),
    },
    # ABB B23/B24: holding registers, big-endian integers; energy U64 in 0.01 kWh (mbmd
    # abb.go; SmartEVSE EMConfig index 6, which reads only the low half at 0x5002)
    "abb-b23": {
        "title": "ABB B23/B24 (3-phase)",
        "defaults": {"id": 1, "baud": 9600, "parity": "N", "stopbits": 1},
        "max_registers": 125,
        "notes": "Default communication settings not verified (evcc's generic 1/9600/8N1) "
                 "[K]. Energy read as the full U64 (SmartEVSE's low 32 bits wrap at "
                 "42 949 672.95 kWh). \"Not available\" is all ones (unsigned) and "
                 "0x7FFF... (signed): both decode to None. A/B lines are reversed on the "
                 "terminal.",
        "rows": (
            ("voltage_l1", 3, 0x5B00, U32, ABCD, 0),
            ("voltage_l2", 3, 0x5B02, U32, ABCD, 0),
            ("voltage_l3", 3, 0x5B04, U32, ABCD, 0),
            ("current_l1", 3, 0x5B0C, U32, ABCD, 1),
            ("current_l2", 3, 0x5B0E, U32, ABCD, 1),
            ("current_l3", 3, 0x5B10, U32, ABCD, 1),
            ("power", 3, 0x5B14, S32, ABCD, -2),
            ("power_l1", 3, 0x5B16, S32, ABCD, -2),
            ("power_l2", 3, 0x5B18, S32, ABCD, -2),
            ("power_l3", 3, 0x5B1A, S32, ABCD, -2),
            ("frequency", 3, 0x5B2C, U16, ABCD, 1),
            ("power_factor", 3, 0x5B3A, S16, ABCD, 0),
            ("energy_import", 3, 0x5000, U64, ABCD, 1),
            ("energy_export", 3, 0x5004, U64, ABCD, 1),
        ),
    },
    # Carlo Gavazzi EM340: input registers, INT32 low word first (manual "EM330/340
    # communication protocol"; mbmd carlogavazzi-ex3x0.go; SmartEVSE index 16)
    "em340": {
        "title": "Carlo Gavazzi EM340 (3-phase)",
        "defaults": {"id": 1, "baud": 9600, "parity": "N", "stopbits": 1},
        "max_registers": 80,
        "notes": "Default communication settings [K]. A/B lines are reversed on the "
                 "terminal.",
        "rows": (
            ("voltage_l1", 4, 0x0000, S32, CDAB, 0),
            ("voltage_l2", 4, 0x0002, S32, CDAB, 0),
            ("voltage_l3", 4, 0x0004, S32, CDAB, 0),
            ("current_l1", 4, 0x000C, S32, CDAB, 0),
            ("current_l2", 4, 0x000E, S32, CDAB, 0),
            ("current_l3", 4, 0x0010, S32, CDAB, 0),
            ("power_l1", 4, 0x0012, S32, CDAB, -1),
            ("power_l2", 4, 0x0014, S32, CDAB, -1),
            ("power_l3", 4, 0x0016, S32, CDAB, -1),
            ("power", 4, 0x0028, S32, CDAB, -1),
            ("power_factor", 4, 0x0031, S16, ABCD, 0),
            ("frequency", 4, 0x0033, S16, ABCD, 2),
            ("energy_import", 4, 0x0034, S32, CDAB, 2),
            ("energy_export", 4, 0x004E, S32, CDAB, 2),
        ),
    },
    # Carlo Gavazzi EM24-DIN (RS-485; the EM24_E1 Ethernet meter has another map): INT32 low
    # word first, INT16 PF and Hz ("EM24-DIN PFA, PFB & X models - Communication Protocol"
    # table 2.3-1: V*10, A*1000, W*10, PF*1000, Hz*10, kWh*10; Victron dbus-modbus-client reads
    # the same types LSW-first; mbmd carlogavazzi-em24.go; evcc PRs 17173 and 31736)
    "em24": {
        "title": "Carlo Gavazzi EM24-DIN (3-phase, RS-485)",
        "defaults": {"id": 1, "baud": 9600, "parity": "N", "stopbits": 1},
        "max_registers": 11,
        "notes": "Import is 0x003E \"kWh(+) TOT\" per the maker's table 2.3-1, not 0x0042 "
                 "as in spec/standards.md and mbmd: 0x0042 is \"kWh(+) PAR\", the partial "
                 "counter a user can reset (evcc PR 17173). Export 0x005C \"kWh(-) TOT\" is "
                 "absent on some variants and configurations, which answer exception 02 "
                 "(evcc PR 31736): it is read alone, so that loses only the export value. "
                 "Parity is fixed to none, 1 stop bit; 4800 or 9600 Bd, factory value [K]. "
                 "max_registers 11 from SmartEVSE's Phoenix EEM-350-D-MCB entry, the same "
                 "register layout (0x0000 0.1 V, 0x000C mA, 0x0028 0.1 W, 0x003E 0.1 kWh) "
                 "[K]. The EM24_E1 (Ethernet) uses the EM340 map instead.",
        "rows": (
            ("voltage_l1", 4, 0x0000, S32, CDAB, 0),
            ("voltage_l2", 4, 0x0002, S32, CDAB, 0),
            ("voltage_l3", 4, 0x0004, S32, CDAB, 0),
            ("current_l1", 4, 0x000C, S32, CDAB, 0),
            ("current_l2", 4, 0x000E, S32, CDAB, 0),
            ("current_l3", 4, 0x0010, S32, CDAB, 0),
            ("power_l1", 4, 0x0012, S32, CDAB, -1),
            ("power_l2", 4, 0x0014, S32, CDAB, -1),
            ("power_l3", 4, 0x0016, S32, CDAB, -1),
            ("power", 4, 0x0028, S32, CDAB, -1),
            ("power_factor", 4, 0x0035, S16, ABCD, 0),
            ("frequency", 4, 0x0037, S16, ABCD, 2),
            ("energy_import", 4, 0x003E, S32, CDAB, 2),
            ("energy_export", 4, 0x005C, S32, CDAB, 2),
        ),
    },
    # Schneider iEM3155 (iEM3x5x): holding registers, float32 high word first in V, A, kW,
    # Hz; energy INT64 in Wh (manual DOCA0005EN-04 p.51/52/61: 1-based 3000/3028/3054/3060/
    # 3110/3204/3208; mbmd iem3000.go reads the same INT64 energy; SmartEVSE index 14)
    "iem3155": {
        "title": "Schneider Electric iEM3155 (3-phase)",
        "defaults": {"id": 1, "baud": 19200, "parity": "E", "stopbits": 1},
        "max_registers": 125,
        "notes": "Energy from the INT64 Wh registers 0x0C83/0x0C87 rather than the float "
                 "copy at 0xB02B (45100), which the manual gives in Wh and SmartEVSE reads as "
                 "kWh: an integer counter has no unit doubt and no float rounding. Power "
                 "factor (0x0C0B) is left out: it uses Schneider's four-quadrant encoding "
                 "(-2..2), not a plain PF. Defaults 19200 Bd, even parity, address 1 [K] "
                 "(the manual lists 9600/19200/38400, odd/even/none). No documented "
                 "per-request limit [K]: SmartEVSE reads 60 at once; the longest planned "
                 "read is 8.",
        "rows": (
            ("current_l1", 3, 0x0BB7, F32, ABCD, 3),
            ("current_l2", 3, 0x0BB9, F32, ABCD, 3),
            ("current_l3", 3, 0x0BBB, F32, ABCD, 3),
            ("voltage_l1", 3, 0x0BD3, F32, ABCD, 1),
            ("voltage_l2", 3, 0x0BD5, F32, ABCD, 1),
            ("voltage_l3", 3, 0x0BD7, F32, ABCD, 1),
            ("power_l1", 3, 0x0BED, F32, ABCD, 3),
            ("power_l2", 3, 0x0BEF, F32, ABCD, 3),
            ("power_l3", 3, 0x0BF1, F32, ABCD, 3),
            ("power", 3, 0x0BF3, F32, ABCD, 3),
            ("frequency", 3, 0x0C25, F32, ABCD, 3),
            ("energy_import", 3, 0x0C83, S64, ABCD, 0),
            ("energy_export", 3, 0x0C87, S64, ABCD, 0),
        ),
    },
    # Phoenix Contact EMpro EEM-MA370: float32 low word first, V, A, W, Hz, Wh; the device
    # answers FC03 and FC04 alike (maker's register list as shipped in Bouni/empro_exporter
    # registers.py: 32774.. U1-U3, 32780 F, 32782.. I1-I3, 32790 P, 32796 PF, 32798.. P1-P3,
    # 33024 "Ea+t Gesamt Wirkenergie Bezug", 33030 "Ea-t Gesamt Wirkenergie Abgabe";
    # OpenEMS PhoenixContactMeterImpl.java: LSWMSW floats, same instantaneous addresses)
    "eem-ma370": {
        "title": "Phoenix Contact EMpro EEM-MA370 (3-phase)",
        "defaults": {"id": 1, "baud": 9600, "parity": "N", "stopbits": 1},
        "max_registers": 125,
        "notes": "Import/export direction resolved: 0x8100 is total active energy drawn "
                 "(Bezug, import), 0x8106 total delivered (Abgabe, export), per the maker's "
                 "register list; spec/standards.md had them the other way round. OpenEMS "
                 "agrees once its sign convention is applied (its PRODUCTION channel is "
                 "energy drawn through a grid meter); newer OpenEMS reads a second energy "
                 "block at 0x9306/0x930E instead. Energy is a float in Wh: steps grow to "
                 "2 Wh above 16.7 MWh. Modbus/TCP port 502 (up to 4 clients); RS-485 only on "
                 "EEM-MA370-R, its defaults [K]. No documented per-request limit [K]: "
                 "OpenEMS reads 54 at once; the longest planned read is 14.",
        "rows": (
            ("voltage_l1", 3, 0x8006, F32, CDAB, 1),
            ("voltage_l2", 3, 0x8008, F32, CDAB, 1),
            ("voltage_l3", 3, 0x800A, F32, CDAB, 1),
            ("frequency", 3, 0x800C, F32, CDAB, 3),
            ("current_l1", 3, 0x800E, F32, CDAB, 3),
            ("current_l2", 3, 0x8010, F32, CDAB, 3),
            ("current_l3", 3, 0x8012, F32, CDAB, 3),
            ("power", 3, 0x8016, F32, CDAB, 0),
            ("power_factor", 3, 0x801C, F32, CDAB, 3),
            ("power_l1", 3, 0x801E, F32, CDAB, 0),
            ("power_l2", 3, 0x8020, F32, CDAB, 0),
            ("power_l3", 3, 0x8022, F32, CDAB, 0),
            ("energy_import", 3, 0x8100, F32, CDAB, 0),
            ("energy_export", 3, 0x8106, F32, CDAB, 0),
        ),
    },
    # Finder 7M.38 (7M.24 is its single-phase sibling): input registers, float32 high word
    # first, V, A, W, Hz, Wh (Finder "Modbus-7M24-7M38_v2"; mbmd finder7m38.go; Modbus
    # Connect / star.ke.st table; timlaing/modbus_local_gateway 7M_38.yaml; SmartEVSE index 11)
    "finder-7m": {
        "title": "Finder 7M.38 (3-phase)",
        "defaults": {"id": 1, "baud": 9600, "parity": "N", "stopbits": 1},
        "max_registers": 125,
        "notes": "Import 2752 \"energy counter n1\" (mbmd, Modbus Connect) rather than "
                 "SmartEVSE's 2638; export 2756 (n3). Their type is unconfirmed [K]: the "
                 "register tables and mbmd's comment say float32 in Wh, while mbmd's code "
                 "reads them as uint32 Wh; float32 chosen (steps grow to 2 Wh above "
                 "16.7 MWh). Frequency 2498 (Modbus Connect, modbus_local_gateway) rather "
                 "than mbmd's 2584. Power factor 2560 (total after 2554/56/58). Defaults "
                 "not documented (1200-115200 Bd supported) [K]. No documented per-request "
                 "limit [K]: SmartEVSE reads 20 at once; the longest planned read is 8.",
        "rows": (
            ("frequency", 4, 2498, F32, ABCD, 3),
            ("voltage_l1", 4, 2500, F32, ABCD, 1),
            ("voltage_l2", 4, 2502, F32, ABCD, 1),
            ("voltage_l3", 4, 2504, F32, ABCD, 1),
            ("current_l1", 4, 2516, F32, ABCD, 3),
            ("current_l2", 4, 2518, F32, ABCD, 3),
            ("current_l3", 4, 2520, F32, ABCD, 3),
            ("power_l1", 4, 2530, F32, ABCD, 0),
            ("power_l2", 4, 2532, F32, ABCD, 0),
            ("power_l3", 4, 2534, F32, ABCD, 0),
            ("power", 4, 2536, F32, ABCD, 0),
            ("power_factor", 4, 2560, F32, ABCD, 3),
            ("energy_import", 4, 2752, F32, ABCD, 0),
            ("energy_export", 4, 2756, F32, ABCD, 0),
        ),
    },
    # Orno OR-WE-517 (3-phase): holding registers, float32 high word first, V, A, kW, kWh,
    # Hz (mbmd orno3p.go after "Register description OR-WE-514&OR-WE-515"; TapHome
    # "Orno OR-WE-517": FC03 IEEE754 float32, 9600 8E1, address 1; evcc comset 8E1)
    "or-we-517": {
        "title": "Orno OR-WE-517 (3-phase)",
        "defaults": {"id": 1, "baud": 9600, "parity": "E", "stopbits": 1},
        "max_registers": 125,
        "notes": "Import from 0x0108 (forward active energy), not 0x0100: 0x0100 is the "
                 "total of both directions, which would count exported energy as charged. "
                 "dingo35's SmartEVSE test profile reads FC04 with current at 0x000C and "
                 "energy at 0x0100; mbmd and TapHome agree on FC03 with current at 0x0016, "
                 "as here. Power in kW. No documented per-request limit [K]; the longest "
                 "planned read is 22 (0x000E-0x0023).",
        "rows": (
            ("voltage_l1", 3, 0x000E, F32, ABCD, 1),
            ("voltage_l2", 3, 0x0010, F32, ABCD, 1),
            ("voltage_l3", 3, 0x0012, F32, ABCD, 1),
            ("frequency", 3, 0x0014, F32, ABCD, 3),
            ("current_l1", 3, 0x0016, F32, ABCD, 3),
            ("current_l2", 3, 0x0018, F32, ABCD, 3),
            ("current_l3", 3, 0x001A, F32, ABCD, 3),
            ("power", 3, 0x001C, F32, ABCD, 3),
            ("power_l1", 3, 0x001E, F32, ABCD, 3),
            ("power_l2", 3, 0x0020, F32, ABCD, 3),
            ("power_l3", 3, 0x0022, F32, ABCD, 3),
            ("power_factor", 3, 0x0034, F32, ABCD, 3),
            ("energy_import", 3, 0x0108, F32, ABCD, 3),
            ("energy_export", 3, 0x0110, F32, ABCD, 3),
        ),
    },
    # Chint DTSU666 (3-phase): holding registers, float32 high word first, each float in the
    # unit of the old integer map: 0.1 V, mA, 0.1 W, PF x1000, 0.01 Hz, kWh (SmartEVSE index
    # 15 "0.1V / mA / 0.1W / kWh"; mbmd dtsu666.go divides by 10/1000/10/1000/100/1; Chint
    # "DTSU666 series and DSSU666 series" manual §5.3: 9600 Bd, N.1, address 1, FC03)
    "dtsu666": {
        "title": "Chint DTSU666 (3-phase)",
        "defaults": {"id": 1, "baud": 9600, "parity": "N", "stopbits": 1},
        "max_registers": 125,
        "notes": "Voltages from 0x2006/0x2008/0x200A (Ua, Ub, Uc: phase to neutral) per "
                 "Chint's address table as quoted by aggsoft, star.ke.st and an mbpoll "
                 "reference; SmartEVSE and mbmd read 0x2000, which that table names Uab "
                 "(line to line, about 400 V). Units of the floats follow SmartEVSE and "
                 "mbmd (two production users); some third-party tables list plain V, A, W "
                 "[K]. Energy 0x101E/0x1028 is in kWh. No documented per-request limit "
                 "[K]: SmartEVSE reads 14 at once; the longest planned read is 20 "
                 "(0x2006-0x2019).",
        "rows": (
            ("voltage_l1", 3, 0x2006, F32, ABCD, 0),
            ("voltage_l2", 3, 0x2008, F32, ABCD, 0),
            ("voltage_l3", 3, 0x200A, F32, ABCD, 0),
            ("current_l1", 3, 0x200C, F32, ABCD, 0),
            ("current_l2", 3, 0x200E, F32, ABCD, 0),
            ("current_l3", 3, 0x2010, F32, ABCD, 0),
            ("power", 3, 0x2012, F32, ABCD, -1),
            ("power_l1", 3, 0x2014, F32, ABCD, -1),
            ("power_l2", 3, 0x2016, F32, ABCD, -1),
            ("power_l3", 3, 0x2018, F32, ABCD, -1),
            ("power_factor", 3, 0x202A, F32, ABCD, 0),
            ("frequency", 3, 0x2044, F32, ABCD, 1),
            ("energy_import", 3, 0x101E, F32, ABCD, 3),
            ("energy_export", 3, 0x1028, F32, ABCD, 3),
        ),
    },
    # WAGO 879-30x0: the Inepro PRO380-Mod map, holding registers, float32 high word first,
    # V, A, kW, kWh, Hz (mbmd wago87930.go and inepro.go, both scaling power by 1000;
    # SmartEVSE index 8 "V / A / kW / kWh", whose docs set a PRO380 up as WAGO)
    "wago-879": {
        "title": "WAGO 879-30x0 / Inepro PRO380-Mod (3-phase)",
        "defaults": {"id": 1, "baud": 9600, "parity": "E", "stopbits": 1},
        "max_registers": 125,
        "notes": "Import 0x600C rather than 0x6000, which older SmartEVSE read: 0x6000 is "
                 "the total of both directions. Power in kW. Defaults 9600 8E1 address 1 "
                 "[K] (Inepro; not verified for WAGO). No documented per-request limit [K]; "
                 "the longest planned read is 14 (0x500C-0x5019).",
        "rows": (
            ("voltage_l1", 3, 0x5002, F32, ABCD, 1),
            ("voltage_l2", 3, 0x5004, F32, ABCD, 1),
            ("voltage_l3", 3, 0x5006, F32, ABCD, 1),
            ("frequency", 3, 0x5008, F32, ABCD, 3),
            ("current_l1", 3, 0x500C, F32, ABCD, 3),
            ("current_l2", 3, 0x500E, F32, ABCD, 3),
            ("current_l3", 3, 0x5010, F32, ABCD, 3),
            ("power", 3, 0x5012, F32, ABCD, 3),
            ("power_l1", 3, 0x5014, F32, ABCD, 3),
            ("power_l2", 3, 0x5016, F32, ABCD, 3),
            ("power_l3", 3, 0x5018, F32, ABCD, 3),
            ("power_factor", 3, 0x502A, F32, ABCD, 3),
            ("energy_import", 3, 0x600C, F32, ABCD, 3),
            ("energy_export", 3, 0x6018, F32, ABCD, 3),
        ),
    },
}
