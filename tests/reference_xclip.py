"""A line-by-line transcription of the reference X-CLIP forward (xuguohai/X-CLIP, CLIP4Clip lineage),
used only to check that xclip-pl reproduces its logits. It loads a reference-format state dict
(``clip.*``, ``transformerClip.*``, ``frame_position_embeddings``, the eight AOSM matrices) with strict=True.
Written from the published architecture (OpenAI CLIP ``model.py``, CLIP4Clip ``module_cross.py`` and
X-CLIP ``modeling_xclip.py``); ViT backbones, "2d" patches, seqTransf, loose type, fp32.
"""
from collections import OrderedDict

import torch
from torch import nn


class LayerNorm(nn.LayerNorm):  # OpenAI: compute in fp32
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


class TFLayerNorm(nn.Module):  # CLIP4Clip module_cross: TF-style, eps 1e-12
    def __init__(self, hidden, eps=1e-12):
        super().__init__()
        self.weight, self.bias, self.variance_epsilon = nn.Parameter(torch.ones(hidden)), nn.Parameter(torch.zeros(hidden)), eps

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.variance_epsilon)) + self.bias


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, mlp_width, norm=LayerNorm, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = norm(d_model)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d_model, mlp_width)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(mlp_width, d_model))]))
        self.ln_2 = norm(d_model)
        self.attn_mask, self.n_head = attn_mask, n_head

    def forward(self, x, attn_mask=None):
        if attn_mask is not None:  # module_cross: per-video additive mask, repeated per head
            mask = attn_mask.repeat_interleave(self.n_head, dim=0)
        else:
            mask = self.attn_mask(x.size(0)) if callable(self.attn_mask) else self.attn_mask
        x = x + self.attn(self.ln_1(x), self.ln_1(x), self.ln_1(x), need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mlp_width, norm=LayerNorm, attn_mask=None):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_width, norm, attn_mask) for _ in range(layers))

    def forward(self, x, attn_mask=None):
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


def _blocks(sd, prefix):
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


class ReferenceCLIP(nn.Module):
    def __init__(self, sd):
        super().__init__()
        vw, patch = sd["visual.conv1.weight"].shape[0], sd["visual.conv1.weight"].shape[-1]
        tw, vocab = sd["ln_final.weight"].shape[0], sd["token_embedding.weight"].shape[0]
        ctx, embed = sd["positional_embedding"].shape[0], sd["text_projection"].shape[1]
        self.visual = nn.Module()
        self.visual.conv1 = nn.Conv2d(3, vw, patch, patch, bias=False)
        self.visual.class_embedding = nn.Parameter(torch.zeros(vw))
        self.visual.positional_embedding = nn.Parameter(torch.zeros_like(sd["visual.positional_embedding"]))
        self.visual.ln_pre, self.visual.ln_post = LayerNorm(vw), LayerNorm(vw)
        self.visual.transformer = Transformer(vw, _blocks(sd, "visual.transformer.resblocks."), max(1, vw // 64),
                                              sd["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0])
        self.visual.proj = nn.Parameter(torch.zeros(vw, embed))
        self.transformer = Transformer(tw, _blocks(sd, "transformer.resblocks."), max(1, tw // 64),
                                       sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0], attn_mask=self.build_attention_mask)
        self.token_embedding = nn.Embedding(vocab, tw)
        self.positional_embedding = nn.Parameter(torch.zeros(ctx, tw))
        self.ln_final = LayerNorm(tw)
        self.text_projection = nn.Parameter(torch.zeros(tw, embed))
        self.logit_scale = nn.Parameter(torch.zeros([]))

    @staticmethod
    def build_attention_mask(context_length):
        mask = torch.zeros(context_length, context_length)
        mask.fill_(float("-inf"))
        return mask.triu_(1)

    def encode_image(self, x):
        v = self.visual
        x = v.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([v.class_embedding + torch.zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
        x = v.ln_pre(x + v.positional_embedding)
        x = v.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return v.ln_post(x[:, 0, :]) @ v.proj

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding[: text.size(1), :]
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        hidden = self.ln_final(x) @ self.text_projection
        return hidden[torch.arange(hidden.shape[0]), text.argmax(dim=-1)], hidden


class ReferenceXCLIP(nn.Module):
    def __init__(self, sd):
        super().__init__()
        clip_sd = {k[5:]: v for k, v in sd.items() if k.startswith("clip.")}
        self.clip = ReferenceCLIP(clip_sd)
        dim = sd["frame_position_embeddings.weight"].shape[1]
        self.frame_position_embeddings = nn.Embedding(*sd["frame_position_embeddings.weight"].shape)
        self.transformerClip = Transformer(dim, _blocks(sd, "transformerClip.resblocks."), dim // 64, 4 * dim, norm=TFLayerNorm)
        for name in ("global_mat_weight", "word_logit_weight", "frame_logit_weight", "local_mat_weight",
                     "frame_mat_weight", "word_mat_weight", "frame_mat_weight2", "word_mat_weight2"):
            setattr(self, name, nn.Parameter(torch.zeros_like(sd[name])))
        self.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)

    def forward(self, input_ids, video, video_mask):
        """input_ids [a, L]; video [b, F, 3, H, W] normalised; video_mask [b, F]. Returns logits [a, b]."""
        sequence_output, seq_features = self.clip.encode_text(input_ids)
        b, f = video_mask.shape
        visual_output = self.clip.encode_image(video.reshape(b * f, *video.shape[2:])).float().view(b, f, -1)
        return self._loose_similarity(sequence_output.float(), seq_features.float(), visual_output, video_mask.float())

    def _loose_similarity(self, sequence_output, seq_features, visual_output, video_mask):
        visual_output_original = visual_output
        seq_length = visual_output.size(1)
        position_ids = torch.arange(seq_length, dtype=torch.long).unsqueeze(0).expand(visual_output.size(0), -1)
        visual_output = visual_output + self.frame_position_embeddings(position_ids)
        extended_video_mask = (1.0 - video_mask.unsqueeze(1)) * -1000000.0
        extended_video_mask = extended_video_mask.expand(-1, video_mask.size(1), -1)
        visual_output = self.transformerClip(visual_output.permute(1, 0, 2), extended_video_mask).permute(1, 0, 2)
        visual_output = visual_output + visual_output_original

        video_output = visual_output / visual_output.norm(dim=-1, keepdim=True)
        video_mask_un = video_mask.unsqueeze(-1)
        video_output = video_output * video_mask_un
        video_mask_un_sum = torch.sum(video_mask_un, dim=1, dtype=torch.float)
        video_mask_un_sum[video_mask_un_sum == 0.0] = 1.0
        video_output = torch.sum(video_output, dim=1) / video_mask_un_sum
        video_output = video_output / video_output.norm(dim=-1, keepdim=True)
        frame_features = visual_output_original / visual_output_original.norm(dim=-1, keepdim=True)
        sentence_output = sequence_output / sequence_output.norm(dim=-1, keepdim=True)
        word_features = seq_features / seq_features.norm(dim=-1, keepdim=True)
        logit_scale = self.clip.logit_scale.exp()

        video_sentence_logits = logit_scale * torch.matmul(torch.matmul(sentence_output, self.global_mat_weight), video_output.t())
        video_word_logits = logit_scale * torch.sum(torch.matmul(word_features, video_output.t())
            * torch.matmul(torch.softmax(torch.matmul(word_features, video_output.t()) / 1e-2, dim=1).permute(0, 2, 1), self.word_logit_weight).permute(0, 2, 1), dim=1)
        sentence_frame_logits = logit_scale * torch.sum(torch.matmul(sentence_output, frame_features.permute(0, 2, 1))
            * torch.matmul(torch.softmax(torch.matmul(sentence_output, frame_features.permute(0, 2, 1)) / 1e-2, dim=-1), self.frame_logit_weight), dim=-1).t()
        frame_word_logits = logit_scale * self._attenion_over_fine_grained_sim_matrix(word_features, frame_features)
        return (video_sentence_logits + video_word_logits + sentence_frame_logits + frame_word_logits) / 4

    def _attenion_over_fine_grained_sim_matrix(self, word_features, frame_features):
        bs_video, num_frames, dim_video = frame_features.shape
        bs_text, num_words, dim_text = word_features.shape
        fine_grained_sim_scores = torch.matmul(torch.matmul(word_features.view(-1, dim_text), self.local_mat_weight),
                                               frame_features.view(-1, dim_video).t()).view(bs_text, num_words, bs_video, num_frames)
        word_level_logit = torch.sum(torch.matmul(torch.softmax(fine_grained_sim_scores / 1e-2, dim=1).permute(0, 2, 3, 1), self.word_mat_weight).permute(0, 3, 1, 2) * fine_grained_sim_scores, dim=1)
        frame_level_logit = torch.sum(torch.matmul(torch.softmax(fine_grained_sim_scores / 1e-2, dim=-1), self.frame_mat_weight) * fine_grained_sim_scores, dim=-1)
        sent2frame_logits = torch.sum(torch.matmul(torch.softmax(word_level_logit / 1e-2, dim=-1), self.frame_mat_weight2) * word_level_logit, dim=-1)
        video2word_logits = torch.sum(torch.matmul(torch.softmax(frame_level_logit / 1e-2, dim=1).permute(0, 2, 1), self.word_mat_weight2).permute(0, 2, 1) * frame_level_logit, dim=1)
        return (sent2frame_logits + video2word_logits) / 2
