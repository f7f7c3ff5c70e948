//! The floor: one empty BTF tracepoint program per hook tracepkt uses, so that the bench measures
//! what being attached at all costs, and tracepkt's programs are compared with it. How often each
//! ran comes from the kernel's own accounting (`kernel.bpf_stats_enabled`), not from the programs.
//! Program names are `floor_<hook>`; scripts/bench.sh tells them apart from tracepkt's by that
//! prefix. The `spacer_<n>` programs are only loaded, never attached (`tracepkt-floor --spread`).
#![no_std]
#![no_main]

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

#[btf_tracepoint(function = "net_dev_queue")]
pub fn floor_net_dev_queue(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "netif_receive_skb")]
pub fn floor_netif_receive_skb(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "netif_rx")]
pub fn floor_netif_rx(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "napi_gro_receive_entry")]
pub fn floor_napi_gro_receive_entry(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[btf_tracepoint(function = "kfree_skb")]
pub fn floor_kfree_skb(_ctx: BtfTracePointContext) -> i32 {
    0
}

// Spacers for `tracepkt-floor --spread`: loaded (never attached) before each floor program, so
// that about 4.8 KiB of other code sits between two floor programs in the kernel's JIT memory, as
// each tracepkt entry point is followed by its body. What they compute does not matter, only
// their size: five functions of 300 loads each, and five programs that call all of them (each
// program gets its own copy of the functions).

#[unsafe(no_mangle)]
static mut SPACER_INPUT: u32 = 0;

macro_rules! loads {
    ($acc:ident; $($i:literal)*) => {
        $( $acc = $acc.wrapping_add(unsafe { core::ptr::read_volatile(&raw const SPACER_INPUT) } ^ $i); )*
    };
}

macro_rules! loads300 {
    ($acc:ident) => {
        loads!($acc; 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29);
        loads!($acc; 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59);
        loads!($acc; 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89);
        loads!($acc; 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119);
        loads!($acc; 120 121 122 123 124 125 126 127 128 129 130 131 132 133 134 135 136 137 138 139 140 141 142 143 144 145 146 147 148 149);
        loads!($acc; 150 151 152 153 154 155 156 157 158 159 160 161 162 163 164 165 166 167 168 169 170 171 172 173 174 175 176 177 178 179);
        loads!($acc; 180 181 182 183 184 185 186 187 188 189 190 191 192 193 194 195 196 197 198 199 200 201 202 203 204 205 206 207 208 209);
        loads!($acc; 210 211 212 213 214 215 216 217 218 219 220 221 222 223 224 225 226 227 228 229 230 231 232 233 234 235 236 237 238 239);
        loads!($acc; 240 241 242 243 244 245 246 247 248 249 250 251 252 253 254 255 256 257 258 259 260 261 262 263 264 265 266 267 268 269);
        loads!($acc; 270 271 272 273 274 275 276 277 278 279 280 281 282 283 284 285 286 287 288 289 290 291 292 293 294 295 296 297 298 299);
    };
}

macro_rules! spacer_fns {
    ($($f:ident)*) => {
        $(
            #[inline(never)]
            fn $f(x: u32) -> u32 {
                let mut acc = x;
                loads300!(acc);
                acc
            }
        )*
    };
}

spacer_fns!(spacer_a spacer_b spacer_c spacer_d spacer_e);

macro_rules! spacers {
    ($($name:ident)*) => {
        $(
            #[btf_tracepoint(function = "kfree_skb")]
            pub fn $name(_ctx: BtfTracePointContext) -> i32 {
                (spacer_a(0) ^ spacer_b(1) ^ spacer_c(2) ^ spacer_d(3) ^ spacer_e(4)) as i32
            }
        )*
    };
}

spacers!(spacer_0 spacer_1 spacer_2 spacer_3 spacer_4);

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
