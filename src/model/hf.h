/* hf.h: what model/hf.c (Hugging Face folders) adds to model.h.
 *
 * A model loaded with tp_model_load_hf keeps its mapped safetensors shards in
 * m->hf; tp_model_free releases them with tp_hf_free.
 */
#ifndef TEMPO_HF_H
#define TEMPO_HF_H

/* Unmap and free what m->hf holds (NULL is fine). */
void tp_hf_free(void *hf);

/* Llama 3.1 "llama3" rope_scaling as per-frequency divisors (the rope_freqs
 * tensor llama.cpp's converter writes): out[i] for i < rope_dim/2 divides the
 * angle of frequency base^(-2i/rope_dim). Wavelengths shorter than
 * orig_ctx/high_freq keep 1, longer than orig_ctx/low_freq get factor, and the
 * band between is interpolated smoothly. */
void tp_llama3_rope_factors(float *out, int rope_dim, double base, double factor, double low_freq,
                            double high_freq, double orig_ctx);

#endif
