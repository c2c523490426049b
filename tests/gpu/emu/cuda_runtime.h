/* cuda_runtime.h — the emulator's stand-in for the CUDA runtime header (see emu.h). Test-only. */
#ifndef MT_EMU_CUDA_RUNTIME_H
#define MT_EMU_CUDA_RUNTIME_H
#include "emu.h"
#endif
