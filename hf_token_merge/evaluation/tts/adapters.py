"""Family adapters between the ids a TTS speech-LLM generates and the codes its codec decodes.

A merged model answers in the ORIGINAL id space: it emits an original id of the winning merged row (the
representative under greedy decoding, any member when sampling). Output-side merging breaks TTS exactly when
such an id is not a valid code for the slot it lands in: an Orpheus id of the wrong frame position, an OuteTTS
`<|c1_N|>` where a `<|c2_N|>` belongs, a text token in the middle of speech. The adapters check every slot and
raise `InvalidSpeechTokenError` (a `TokenMergeError`) naming the offending id, its token and its position,
instead of decoding garbage or silently dropping the token as the families' own scripts do.

Families, their tokens, and the codec package a user installs (imported lazily, never a dependency):

* Llasa: `<|s_N|>`, N < 65,536, one 50 Hz stream; X-codec2, `pip install xcodec2` (`HKUSTAudio/xcodec2`).
* Orpheus: 7 `<custom_token_N>` per frame, 3 SNAC levels (1+2+4 codes per frame); SNAC 24 kHz, `pip install snac`
  (`hubertsiuzdak/snac_24khz`).
* Spark-TTS: `<|bicodec_semantic_N|>` (50 Hz) plus 32 `<|bicodec_global_N|>`; BiCodec, the `sparktts` package of
  github.com/SparkAudio/Spark-TTS (not on PyPI).
* OuteTTS 1.0: `<|c1_N|><|c2_N|>` per 75 Hz frame, 2 DAC codebooks; `pip install outetts`
  (`ibm-research/DAC.speech.v1.0`).
* reference: `<|s_N|>`, N < K, the reference codec that ships with hf_token_merge.

Every adapter also maps codes back to ids (`ids`), which the oracle model of `evaluate_tts_wer` and the tests use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hf_token_merge.errors import TokenMergeError


class InvalidSpeechTokenError(TokenMergeError):
    """A generated id that does not map to a valid codec code at its position.

    Attributes:
        token_id: The offending id.
        position: Its index among the generated ids (after the prompt).
    """

    def __init__(self, message: str, *, token_id: int, position: int) -> None:
        super().__init__(message)
        self.token_id = token_id
        self.position = position


@dataclass
class SpeechCodes:
    """Codec codes of one generation.

    Attributes:
        codes: Code lists by stream name (`"codes"`; Orpheus `"level_0".."level_2"`; Spark `"semantic"`, `"global"`;
            OuteTTS `"c1"`, `"c2"`).
        frames: Codec frames (time steps of the finest-rate stream the family counts in: one Orpheus frame is
            7 tokens, one OuteTTS frame 2).
        seconds: `frames / frame_rate`.
        ended: Whether the generation emitted the family's end token.
        dropped_tokens: Trailing tokens of an incomplete frame that the family's decoder drops too (Orpheus, OuteTTS).
    """

    codes: dict[str, list[int]]
    frames: int
    seconds: float
    ended: bool
    dropped_tokens: int = 0

    def tensors(self) -> dict[str, torch.Tensor]:
        """The code lists as `(1, T)` long tensors (the batch layout the codecs take)."""
        return {name: torch.tensor(values, dtype=torch.long).unsqueeze(0) for name, values in self.codes.items()}


def _numbered_tokens(tokenizer: Any, pattern: str) -> dict[int, int]:
    """`{id: N}` for every vocabulary token that matches `pattern` (one integer group)."""
    compiled = re.compile(pattern)
    out = {}
    for token, token_id in tokenizer.get_vocab().items():
        match = compiled.fullmatch(token)
        if match:
            out[int(token_id)] = int(match.group(1))
    return out


def _token_id(tokenizer: Any, token: str, family: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id or token not in tokenizer.get_vocab():
        raise TokenMergeError(
            f"The tokenizer has no {token!r}, which the {family} adapter needs. Fix: pass the {family} model's own "
            "tokenizer (or the matching marker names to the adapter)."
        )
    return int(token_id)


def _code_ids(table: dict[int, int], family: str, what: str, count: int) -> dict[int, int]:
    """`{N: id}` for N in 0..count-1, refusing a tokenizer that lacks some of them."""
    by_code = {code: token_id for token_id, code in table.items() if code < count}
    missing = [code for code in range(count) if code not in by_code]
    if missing:
        raise TokenMergeError(
            f"The tokenizer lacks {len(missing)} of the {count} {what} tokens the {family} adapter needs "
            f"(first missing: N={missing[0]}). Fix: pass the {family} model's tokenizer, or the codebook size it has."
        )
    return by_code


class SpeechTokenAdapter:
    """Maps generated ids to codec codes and back, for one model family.

    Subclasses set `family`, `codec`, `install` and `frame_rate`, and implement `_map` (ids → codes, strict) and
    `ids` (codes → ids).

    Args:
        tokenizer: The model's tokenizer (the code tokens are found by name).
    """

    family: ClassVar[str] = ""
    codec: ClassVar[str] = ""
    install: ClassVar[str] = ""
    module: ClassVar[str] = ""
    frame_rate: float = 50.0

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.end_token_ids: tuple[int, ...] = ()
        self.skip_ids: frozenset[int] = frozenset()

    def token(self, token_id: int) -> str:
        """The token spelling of an id (for messages)."""
        token = self.tokenizer.convert_ids_to_tokens(int(token_id))
        return token if token is not None else f"<id {token_id}>"

    def _invalid(self, token_id: int, position: int, why: str, fix: str) -> InvalidSpeechTokenError:
        return InvalidSpeechTokenError(
            f"{self.family}: generated id {token_id} ({self.token(token_id)!r}) at position {position} {why}. "
            f"Fix: {fix}",
            token_id=token_id,
            position=position,
        )

    def body(self, generated_ids: Iterable[int]) -> tuple[list[tuple[int, int]], bool]:
        """The generated ids up to the first end token, minus framing markers, with their positions.

        Args:
            generated_ids: The new ids after the prompt.

        Returns:
            `([(position, id), ...], ended)`.
        """
        out, ended = [], False
        for position, token_id in enumerate(int(t) for t in generated_ids):
            if token_id in self.end_token_ids:
                ended = True
                break
            if token_id not in self.skip_ids:
                out.append((position, token_id))
        return out, ended

    def codes(self, generated_ids: Iterable[int], prompt_ids: Sequence[int] | None = None) -> SpeechCodes:
        """Strictly map a generation to codec codes.

        Args:
            generated_ids: The ids generated after the prompt (a list or 1-D tensor); everything from the first end
                token on is ignored.
            prompt_ids: The prompt (Spark-TTS reads voice-cloning global tokens from it); unused by other families.

        Returns:
            The codes, frame count, seconds, and whether the end token was emitted.

        Raises:
            InvalidSpeechTokenError: An id is not a valid code for its position; the message names it.
        """
        if isinstance(generated_ids, torch.Tensor):
            generated_ids = generated_ids.flatten().tolist()
        body, ended = self.body(generated_ids)
        codes, frames, dropped = self._map(body, prompt_ids)
        return SpeechCodes(codes, frames, frames / self.frame_rate, ended, dropped)

    def _map(
        self, body: list[tuple[int, int]], prompt_ids: Sequence[int] | None
    ) -> tuple[dict[str, list[int]], int, int]:
        raise NotImplementedError

    def ids(self, codes: dict[str, Sequence[int]]) -> list[int]:
        """The token ids that spell `codes` (the inverse of `codes`, without markers or end token).

        Args:
            codes: Code lists by stream name, as in `SpeechCodes.codes`.

        Returns:
            The ids in generation order.
        """
        raise NotImplementedError

    def require_codec(self) -> Any:
        """Import the codec's package (lazily: it is never a dependency of hf_token_merge).

        Returns:
            The imported module.

        Raises:
            ImportError: The package is missing; the message says how to install it.
        """
        try:
            return importlib.import_module(self.module)
        except ImportError as error:
            raise ImportError(
                f"The {self.family} codec ({self.codec}) needs the package {self.module!r}, which is not installed. "
                f"Fix: {self.install}"
            ) from error


class UnitAdapter(SpeechTokenAdapter):
    """One code stream spelled `<|s_N|>` (or `unit_format`): Llasa's X-codec2 and the reference codec.

    Args:
        tokenizer: The model's tokenizer.
        num_codes: Codebook size K; ids of `<|s_N|>` with N >= K are invalid.
        end_tokens: Tokens that end the speech.
        skip_tokens: Framing markers that may appear in the generation and carry no code.
        unit_pattern: Regex of a code token with N as its one group.
        frame_rate: Codes per second.
    """

    family = "reference"
    codec = "a one-stream codec of K codes (the reference codec)"
    install = "it ships with hf_token_merge (hf_token_merge.reference)."
    module = "hf_token_merge.reference"

    def __init__(
        self,
        tokenizer: Any,
        num_codes: int,
        *,
        end_tokens: Sequence[str] = (),
        skip_tokens: Sequence[str] = (),
        unit_pattern: str = r"<\|s_(\d+)\|>",
        frame_rate: float = 50.0,
    ) -> None:
        super().__init__(tokenizer)
        if num_codes < 1:
            raise TokenMergeError(f"num_codes must be >= 1, got {num_codes}. Fix: pass the codec's codebook size.")
        self.num_codes = num_codes
        self.frame_rate = frame_rate
        self.code_of = {i: n for i, n in _numbered_tokens(tokenizer, unit_pattern).items() if n < num_codes}
        self.id_of = _code_ids(self.code_of, self.family, unit_pattern, num_codes)
        ends = list(end_tokens) or [tokenizer.eos_token]
        self.end_token_ids = tuple(_token_id(tokenizer, token, self.family) for token in ends)
        self.skip_ids = frozenset(_token_id(tokenizer, token, self.family) for token in skip_tokens)

    def _map(self, body, prompt_ids):
        codes = []
        for position, token_id in body:
            code = self.code_of.get(token_id)
            if code is None:
                raise self._invalid(
                    token_id,
                    position,
                    f"is not a speech code (one of the {self.num_codes} code tokens)",
                    "merge only the code tokens (the family's recipe), and keep the end token a row of its own.",
                )
            codes.append(code)
        return {"codes": codes}, len(codes), 0

    def ids(self, codes):
        stream = list(codes["codes"])
        bad = [c for c in stream if not 0 <= int(c) < self.num_codes]
        if bad:
            raise TokenMergeError(f"Code {bad[0]} is outside 0..{self.num_codes - 1}. Fix: pass codes of this codec.")
        return [self.id_of[int(c)] for c in stream]


class LlasaAdapter(UnitAdapter):
    """Llasa (HKUST Audio): `<|s_N|>` → N, one X-codec2 code per 50 Hz frame, 16 kHz audio.

    Decoding with the codec (not run here; `pip install xcodec2`):

        from xcodec2.modeling_xcodec2 import XCodec2Model
        codec = XCodec2Model.from_pretrained("HKUSTAudio/xcodec2").eval()
        wav = codec.decode_code(codes.tensors()["codes"].unsqueeze(0))[0, 0]  # (1, 1, T) codes -> 16 kHz samples

    Args:
        tokenizer: Llasa's tokenizer.
        num_codes: 65,536 for the released models (smaller for test replicas).
    """

    family = "llasa"
    codec = "X-codec2 (HKUSTAudio/xcodec2)"
    install = "pip install xcodec2"
    module = "xcodec2"

    def __init__(self, tokenizer: Any, num_codes: int = 65536) -> None:
        super().__init__(
            tokenizer,
            num_codes,
            end_tokens=["<|SPEECH_GENERATION_END|>"],
            skip_tokens=["<|SPEECH_GENERATION_START|>"],
        )

    def prompt(self, text: str) -> list[int]:
        """Llasa's TTS prompt: the chat turn `Convert the text to speech:<|TEXT_UNDERSTANDING_START|>text
        <|TEXT_UNDERSTANDING_END|>`, answered from `<|SPEECH_GENERATION_START|>` (with the chat template when the
        tokenizer has one, else plain `<bos>` + the same tokens)."""
        user = f"Convert the text to speech:<|TEXT_UNDERSTANDING_START|>{text}<|TEXT_UNDERSTANDING_END|>"
        if getattr(self.tokenizer, "chat_template", None):
            chat = [{"role": "user", "content": user}, {"role": "assistant", "content": "<|SPEECH_GENERATION_START|>"}]
            ids = self.tokenizer.apply_chat_template(chat, tokenize=True, continue_final_message=True)
            return list(ids if isinstance(ids, list) else ids["input_ids"])  # a list, or a BatchEncoding
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        body = self.tokenizer(user + "<|SPEECH_GENERATION_START|>", add_special_tokens=False).input_ids
        return bos + list(body)

    def load_decoder(self, device: str = "cpu") -> Callable[[SpeechCodes], torch.Tensor]:
        """X-codec2 as a decode callable: codes → 16 kHz waveform (downloads `HKUSTAudio/xcodec2`; not run here)."""
        module = importlib.import_module(f"{self.require_codec().__name__}.modeling_xcodec2")
        codec = module.XCodec2Model.from_pretrained("HKUSTAudio/xcodec2").eval().to(device)

        @torch.inference_mode()
        def decode(codes: SpeechCodes) -> torch.Tensor:
            return codec.decode_code(codes.tensors()["codes"].unsqueeze(0).to(device))[0, 0].float().cpu()

        return decode


ORPHEUS_POSITIONS = 7
ORPHEUS_CODES = 4096
ORPHEUS_FIRST_CODE = 10  # <custom_token_10> is code 0 of position 0; <custom_token_0..9> are control tokens
# frame position -> SNAC level, in Orpheus' published order (redistribute_codes): 1 coarse, 2 middle, 4 fine codes
ORPHEUS_LEVEL_OF_POSITION = (0, 1, 2, 2, 1, 2, 2)


class OrpheusAdapter(SpeechTokenAdapter):
    """Orpheus (Canopy Labs): 7 `<custom_token_N>` per SNAC frame, position p's code = N - 10 - p * 4096.

    This is Orpheus' published decoding (`code = token_number - 10 - (index % 7) * 4096`, then
    `redistribute_codes`): frame positions 0 / 1, 4 / 2, 3, 5, 6 are SNAC levels 0 / 1 / 2 (about 12 / 23 / 47 Hz).
    Generation starts after the last `<custom_token_1>` (start of speech) and ends at `<custom_token_2>` (end of
    speech); a trailing incomplete frame is dropped, as Orpheus does. A code outside 0..4095 (an id of another
    position's block, which a merge without `partition_size=4096` produces) raises `InvalidSpeechTokenError`.

    Decoding with the codec (not run here; `pip install snac`):

        from snac import SNAC
        snac = SNAC.from_pretrained("hubertsiuzdak/snac_24khz").eval()
        t = codes.tensors()
        wav = snac.decode([t["level_0"], t["level_1"], t["level_2"]])[0, 0]  # 24 kHz samples

    Args:
        tokenizer: Orpheus' tokenizer.
    """

    family = "orpheus"
    codec = "SNAC 24 kHz (hubertsiuzdak/snac_24khz)"
    install = "pip install snac"
    module = "snac"
    frame_rate = 24000 / 2048  # SNAC 24 kHz: hop 512, coarsest level every 4 hops

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        self.number_of = _numbered_tokens(tokenizer, r"<custom_token_(\d+)>")
        self.id_of_number = {n: i for i, n in self.number_of.items()}
        for n in range(ORPHEUS_FIRST_CODE + ORPHEUS_POSITIONS * ORPHEUS_CODES):
            if n not in self.id_of_number:
                raise TokenMergeError(
                    f"The tokenizer has no <custom_token_{n}>; Orpheus needs <custom_token_0>.."
                    f"<custom_token_{ORPHEUS_FIRST_CODE + ORPHEUS_POSITIONS * ORPHEUS_CODES - 1}>. "
                    "Fix: pass Orpheus' own tokenizer."
                )
        self.start_of_speech = self.id_of_number[1]
        self.end_token_ids = (self.id_of_number[2],)
        self.eot_id = _token_id(tokenizer, "<|eot_id|>", self.family)
        self.start_of_human, self.end_of_human = self.id_of_number[3], self.id_of_number[4]

    def prompt(self, text: str) -> list[int]:
        """Orpheus' prompt: `<start_of_human> <bos> text <|eot_id|> <end_of_human>` (for a voice, write
        `"tara: text"`)."""
        ids = list(self.tokenizer(text).input_ids)
        return [self.start_of_human, *ids, self.eot_id, self.end_of_human]

    def body(self, generated_ids):
        generated_ids = list(generated_ids)
        starts = [i for i, t in enumerate(generated_ids) if int(t) == self.start_of_speech]
        first = starts[-1] + 1 if starts else 0  # Orpheus crops after the LAST start-of-speech
        body, ended = super().body(generated_ids[first:])
        return [(position + first, token_id) for position, token_id in body], ended

    def _map(self, body, prompt_ids):
        usable = len(body) - len(body) % ORPHEUS_POSITIONS
        levels: dict[str, list[int]] = {"level_0": [], "level_1": [], "level_2": []}
        for slot, (position, token_id) in enumerate(body[:usable]):
            frame_position = slot % ORPHEUS_POSITIONS
            number = self.number_of.get(token_id)
            if number is None:
                raise self._invalid(
                    token_id,
                    position,
                    f"(frame position {frame_position}) is not a <custom_token_N> code",
                    "merge only the code tokens (the orpheus recipe) and keep the control tokens rows of their own.",
                )
            code = number - ORPHEUS_FIRST_CODE - frame_position * ORPHEUS_CODES
            if not 0 <= code < ORPHEUS_CODES:
                owner = (number - ORPHEUS_FIRST_CODE) // ORPHEUS_CODES
                raise self._invalid(
                    token_id,
                    position,
                    f"sits at frame position {frame_position} but is a code of position {owner} (it decodes to "
                    f"SNAC code {code}, outside 0..{ORPHEUS_CODES - 1})",
                    "merge Orpheus with partition_size=4096 (as the orpheus recipe does), so that no merged row mixes "
                    "frame positions.",
                )
            levels[f"level_{ORPHEUS_LEVEL_OF_POSITION[frame_position]}"].append(code)
        return levels, usable // ORPHEUS_POSITIONS, len(body) - usable

    def ids(self, codes):
        l0, l1, l2 = (list(map(int, codes[f"level_{i}"])) for i in range(3))
        frames = len(l0)
        if len(l1) != 2 * frames or len(l2) != 4 * frames:
            raise TokenMergeError(
                f"SNAC levels must hold T, 2T and 4T codes; got {len(l0)}, {len(l1)}, {len(l2)}. "
                "Fix: pass the three levels of one utterance."
            )
        out = []
        for f in range(frames):
            frame = [l0[f], l1[2 * f], l2[4 * f], l2[4 * f + 1], l1[2 * f + 1], l2[4 * f + 2], l2[4 * f + 3]]
            for p, code in enumerate(frame):
                if not 0 <= code < ORPHEUS_CODES:
                    raise TokenMergeError(f"SNAC code {code} is outside 0..4095. Fix: pass codes of SNAC 24 kHz.")
                out.append(self.id_of_number[ORPHEUS_FIRST_CODE + p * ORPHEUS_CODES + code])
        return out

    def load_decoder(self, device: str = "cpu") -> Callable[[SpeechCodes], torch.Tensor]:
        """SNAC 24 kHz as a decode callable: codes → 24 kHz waveform (downloads the codec; not run here)."""
        snac = self.require_codec().SNAC.from_pretrained("hubertsiuzdak/snac_24khz").eval().to(device)

        @torch.inference_mode()
        def decode(codes: SpeechCodes) -> torch.Tensor:
            t = codes.tensors()
            return snac.decode([t[f"level_{i}"].to(device) for i in range(3)])[0, 0].float().cpu()

        return decode


SPARK_GLOBAL_TOKENS = 32


class SparkTTSAdapter(SpeechTokenAdapter):
    """Spark-TTS (SparkAudio): `<|bicodec_semantic_N|>` (8,192, 50 Hz) plus 32 `<|bicodec_global_N|>` (4,096) per
    utterance, decoded by BiCodec.

    Inside `<|start_global_token|>`..`<|end_global_token|>` every id must be a global token, elsewhere a semantic
    token (a merge that mixed the two families fails here). With voice cloning the global tokens are in the prompt
    and are read from `prompt_ids`; in controlled generation the model writes them.

    Decoding (not run here): BiCodec is not on PyPI; clone github.com/SparkAudio/Spark-TTS, put it on the path, and

        from sparktts.models.audio_tokenizer import BiCodecTokenizer
        bicodec = BiCodecTokenizer("Spark-TTS-0.5B", device="cpu")
        t = codes.tensors()
        wav = bicodec.detokenize(t["global"], t["semantic"])  # 16 kHz samples

    Args:
        tokenizer: Spark-TTS' tokenizer.
        num_semantic: Semantic codebook size.
        num_global: Global codebook size.
    """

    family = "spark_tts"
    codec = "BiCodec (SparkAudio/Spark-TTS-0.5B)"
    install = "git clone https://github.com/SparkAudio/Spark-TTS and add it to PYTHONPATH (package 'sparktts')"
    module = "sparktts"
    frame_rate = 50.0

    def __init__(self, tokenizer: Any, num_semantic: int = 8192, num_global: int = 4096) -> None:
        super().__init__(tokenizer)
        semantic = _numbered_tokens(tokenizer, r"<\|bicodec_semantic_(\d+)\|>")
        global_ = _numbered_tokens(tokenizer, r"<\|bicodec_global_(\d+)\|>")
        self.semantic_of = {i: n for i, n in semantic.items() if n < num_semantic}
        self.global_of = {i: n for i, n in global_.items() if n < num_global}
        self.semantic_id = _code_ids(self.semantic_of, self.family, "<|bicodec_semantic_N|>", num_semantic)
        self.global_id = _code_ids(self.global_of, self.family, "<|bicodec_global_N|>", num_global)
        marker = {name: _token_id(tokenizer, f"<|{name}|>", self.family) for name in _SPARK_MARKERS}
        self.marker = marker
        self.end_token_ids = (tokenizer.eos_token_id, marker["end_semantic_token"])
        self.skip_ids = frozenset({marker["start_semantic_token"]})

    def prompt(self, text: str, global_codes: Sequence[int] | None = None) -> list[int]:
        """Spark-TTS' voice-cloning prompt `<|task_tts|><|start_content|>text<|end_content|>` followed by the
        speaker's 32 global tokens (`global_codes`) and `<|start_semantic_token|>`; without `global_codes` the
        prompt ends at `<|start_global_token|>` and the model writes the global tokens."""
        head = f"<|task_tts|><|start_content|>{text}<|end_content|><|start_global_token|>"
        ids = list(self.tokenizer(head, add_special_tokens=False).input_ids)
        if global_codes is None:
            return ids
        return (
            ids
            + [self.global_id[int(c)] for c in global_codes]
            + [
                self.marker["end_global_token"],
                self.marker["start_semantic_token"],
            ]
        )

    def _globals_in(self, pairs: list[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
        """Split off a `<|start_global_token|>`..`<|end_global_token|>` section; strict inside it."""
        start, end = self.marker["start_global_token"], self.marker["end_global_token"]
        globals_, rest, inside = [], [], False
        for position, token_id in pairs:
            if token_id == start:
                inside = True
            elif token_id == end:
                inside = False
            elif inside:
                code = self.global_of.get(token_id)
                if code is None:
                    raise self._invalid(
                        token_id,
                        position,
                        "is in the global-token section but is not a <|bicodec_global_N|> token",
                        "merge semantic and global tokens apart (partition_size=4096, as the recipe's with_global "
                        "variant does).",
                    )
                globals_.append(code)
            else:
                rest.append((position, token_id))
        return globals_, rest

    def _map(self, body, prompt_ids):
        globals_, rest = self._globals_in(body)
        if not globals_ and prompt_ids is not None:
            prompt_pairs = [(-1, int(t)) for t in prompt_ids]
            globals_, _ = self._globals_in(prompt_pairs)
        semantic = []
        for position, token_id in rest:
            code = self.semantic_of.get(token_id)
            if code is None:
                raise self._invalid(
                    token_id,
                    position,
                    "is not a <|bicodec_semantic_N|> token",
                    "merge only the semantic tokens (the spark_tts recipe), or the global tokens in their own "
                    "partition.",
                )
            semantic.append(code)
        if globals_ and len(globals_) != SPARK_GLOBAL_TOKENS:
            raise InvalidSpeechTokenError(
                f"spark_tts: the generation holds {len(globals_)} global tokens; BiCodec decodes exactly "
                f"{SPARK_GLOBAL_TOKENS}. Fix: check max_new_tokens and the prompt's global section.",
                token_id=-1,
                position=-1,
            )
        return {"semantic": semantic, "global": globals_}, len(semantic), 0

    def ids(self, codes):
        out = [self.semantic_id[int(c)] for c in codes["semantic"]]
        if codes.get("global"):
            head = [self.global_id[int(c)] for c in codes["global"]]
            out = [self.marker["start_global_token"], *head, self.marker["end_global_token"], *out]
        return out


_SPARK_MARKERS = (
    "start_global_token",
    "end_global_token",
    "start_semantic_token",
    "end_semantic_token",
)

OUTETTS_CODES = 1024


class OuteTTSAdapter(SpeechTokenAdapter):
    """OuteTTS 1.0 (OuteAI): each 75 Hz DAC frame is written `<|c1_A|><|c2_B|>` (two codebooks of 1,024).

    Feature tokens, word markers and text between frames are skipped (OuteTTS writes them around each word);
    among the code tokens c1 and c2 must alternate, starting with c1, and N must be below 1,024 (some releases
    have a never-emitted `<|c1_1024|>`). A c2 where a c1 belongs, or the reverse, is what a merge that mixes the
    codebooks produces, and raises `InvalidSpeechTokenError`. A trailing lone c1 is dropped.

    Decoding (not run here): `pip install outetts`, whose DAC interface loads `ibm-research/DAC.speech.v1.0` and
    decodes the `(1, 2, T)` tensor `torch.stack([t["c1"], t["c2"]], 1)` to 24 kHz audio.

    Args:
        tokenizer: OuteTTS' tokenizer.
        num_codes: Codes per codebook.
    """

    family = "outetts"
    codec = "DAC (ibm-research/DAC.speech.v1.0)"
    install = "pip install outetts"
    module = "outetts"
    frame_rate = 75.0

    def __init__(self, tokenizer: Any, num_codes: int = OUTETTS_CODES) -> None:
        super().__init__(tokenizer)
        c1 = _numbered_tokens(tokenizer, r"<\|c1_(\d+)\|>")
        c2 = _numbered_tokens(tokenizer, r"<\|c2_(\d+)\|>")
        self.num_codes = num_codes
        self.book_of = {i: (0, n) for i, n in c1.items()} | {i: (1, n) for i, n in c2.items()}
        self.id_of = (
            _code_ids(c1, self.family, "<|c1_N|>", num_codes),
            _code_ids(c2, self.family, "<|c2_N|>", num_codes),
        )
        self.end_token_ids = (_token_id(tokenizer, "<|audio_end|>", self.family), tokenizer.eos_token_id)

    def _map(self, body, prompt_ids):
        books: list[list[int]] = [[], []]
        expected = 0
        last_c1 = None
        for position, token_id in body:
            entry = self.book_of.get(token_id)
            if entry is None:
                continue  # feature tokens, word markers, text: OuteTTS writes them between frames
            book, code = entry
            if book != expected:
                raise self._invalid(
                    token_id,
                    position,
                    f"is a codebook-{book + 1} code where codebook {expected + 1} belongs (c1 and c2 alternate)",
                    "merge OuteTTS with partition_size=1024 (as the outetts recipe does), so no merged row mixes "
                    "the codebooks.",
                )
            if code >= self.num_codes:
                raise self._invalid(
                    token_id,
                    position,
                    f"is code {code}, outside the codebook's 0..{self.num_codes - 1}",
                    "exclude the reserved slots from the merge (the outetts recipe's exclude_pattern).",
                )
            books[book].append(code)
            last_c1 = position if book == 0 else None
            expected = 1 - expected
        dropped = 1 if last_c1 is not None else 0
        if dropped:
            books[0].pop()
        return {"c1": books[0], "c2": books[1]}, len(books[1]), dropped

    def ids(self, codes):
        c1, c2 = list(map(int, codes["c1"])), list(map(int, codes["c2"]))
        if len(c1) != len(c2):
            raise TokenMergeError(f"c1 and c2 need one code per frame each; got {len(c1)} and {len(c2)}.")
        return [i for a, b in zip(c1, c2, strict=True) for i in (self.id_of[0][a], self.id_of[1][b])]


ADAPTERS: dict[str, type[SpeechTokenAdapter]] = {
    "llasa": LlasaAdapter,
    "orpheus": OrpheusAdapter,
    "spark_tts": SparkTTSAdapter,
    "outetts": OuteTTSAdapter,
    "reference": UnitAdapter,
}


def adapter_for(family: str, tokenizer: Any, **kwargs: Any) -> SpeechTokenAdapter:
    """The adapter of a family by recipe name.

    Args:
        family: `llasa`, `orpheus`, `spark_tts`, `outetts` or `reference` (the last needs `num_codes=`).
        tokenizer: The model's tokenizer.
        **kwargs: Passed to the adapter (e.g. `num_codes`).

    Returns:
        The adapter.
    """
    if family not in ADAPTERS:
        raise TokenMergeError(f"No speech-token adapter for {family!r}. Fix: use one of {sorted(ADAPTERS)}.")
    return ADAPTERS[family](tokenizer, **kwargs)
