// scripts/gpu/sass-summary.py, the GPU session's reader of `cuobjdump -sass` output (no disassembler runs here), on a
// hand-written excerpt in cuobjdump's format: per kernel the instruction count without NOPs, MUFU.EX2 inside exp2f's
// subnormal wrapper told from a bare one, and only the kernels asked for.
import test from 'ava';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const SASS = `
Fatbin elf code:
================
arch = sm_90a

	code for sm_90a
		Function : _ZN5owlet4cuda5wgmma20attention_fwd_kernelILi128ELb0EEEvNS0_5flash6ParamsE
	.headerflags	@"EF_CUDA_TEXMODE_UNIFIED EF_CUDA_64BIT_ADDRESS EF_CUDA_SM90"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                     /* 0x00000a00ff017b82 */
                                                                              /* 0x000fe40000000800 */
        /*0010*/                   FSETP.GEU.AND P0, PT, R4, -126, PT ;
        /*0020*/              @!P0 FMUL R4, R4, 0.5 ;
        /*0030*/                   MUFU.EX2 R5, R4 ;
        /*0040*/              @!P0 FMUL R5, R5, R5 ;
        /*0050*/                   MUFU.EX2 R6, R7 ;
        /*0060*/                   LDGSTS.E.BYPASS.LTC128B.128 [R3], desc[UR4][R8.64], P1 ;
        /*0070*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], RZ, !UPT ;
        /*0080*/                   NOP;
        /*0090*/                   BRA \`(.L_x_2);
		..........
		Function : _ZN5owlet4cuda4kern12other_kernelEv
        /*0000*/                   EXIT ;
`;

test('sass-summary counts a kernel\'s instructions, wrapped and bare MUFU.EX2, and keeps to the kernels asked for', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'owlet-sass-'));
  const f = join(dir, 'all.sass');
  writeFileSync(f, SASS);
  let out: string;
  try {
    out = execFileSync('python3', ['scripts/gpu/sass-summary.py', f, 'attention'], { encoding: 'utf8' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return t.pass('no python3 here (the GPU machine has it)');
    throw e;
  }
  t.regex(out, /attention_fwd_kernel<128, false>|attention_fwd_kernel/);
  t.regex(out, /instructions 9 +MUFU\.EX2 2 \(in the subnormal wrapper: 1\) +LDGSTS 1 +HGMMA 1/);
  t.notRegex(out, /other_kernel/);
  const none = spawnSync('python3', ['scripts/gpu/sass-summary.py', f, 'nothing'], { encoding: 'utf8' });
  t.is(none.status, 1, 'nothing matched: exit 1');
  t.regex(none.stdout, /no kernel matching 'nothing'/);
});
