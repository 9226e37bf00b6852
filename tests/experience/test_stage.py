"""The stage end to end on hand-made samples: what `make_experience` keeps, and that the kept examples'
columns (scores, behaviour log-probs) reach `Objective.loss` through the online trainer's batch dict; the
labeller's `prepare` runs once, at the start of training, with the training prompts."""

from __future__ import annotations

import torch
from transformers import TrainingArguments

from alignment.experience.labellers import RewardLabeller
from alignment.experience.samples import BEHAVIOUR_LOGPS, SCORES
from alignment.experience.selectors import SELECTORS
from alignment.experience.stage import make_experience
from alignment.methods.dpo import DPOObjective, DPOParams
from alignment.sampling.base import SamplingParams
from alignment.trainers.online import OnlineTrainer, PromptCollator

# prompt "a": best "3" (1), worst "-1" (2); "b": all tied -> skipped; "c": best "4" (0), worst "0" (1)
TABLE = {"a": ["1", "3", "-1"], "b": ["2", "2", "2"], "c": ["4", "0", "1"]}
KEPT_SCORES = [[3.0, -1.0], [4.0, 0.0]]
KEPT_LOGPS = [[-0.1, -0.2], [-2.0, -2.1]]  # TableSampler: -(prompt index + sample index / 10)


def test_make_experience_keeps_the_selected_samples_with_their_columns(
    tiny_tokenizer, table_sampler, number_reward
):
    sampler = table_sampler(TABLE, tiny_tokenizer)
    exp = make_experience(
        list(TABLE),
        sampler=sampler,
        labeller=RewardLabeller(number_reward),
        select=SELECTORS.get("best_worst"),
        tokenizer=tiny_tokenizer,
        params=SamplingParams(n=3, logprobs=True),
    )
    ids = sampler.generate(list(TABLE), SamplingParams(n=3)).token_ids
    assert exp.skipped == 1 and exp.completion_ids == [[ids[0][1], ids[0][2]], [ids[2][0], ids[2][1]]]
    assert exp.prompt_ids == [tiny_tokenizer("a")["input_ids"], tiny_tokenizer("c")["input_ids"]]
    columns = exp.columns()
    assert sorted(columns) == [BEHAVIOUR_LOGPS, SCORES]
    assert columns[SCORES].tolist() == KEPT_SCORES
    torch.testing.assert_close(columns[BEHAVIOUR_LOGPS], torch.tensor(KEPT_LOGPS, dtype=torch.float64))
    assert exp.all_scores.shape == (3, 3) and exp.lengths.shape == (3, 3)


def test_without_logprobs_only_scores_travel(tiny_tokenizer, table_sampler, number_reward):
    exp = make_experience(
        ["a"],
        sampler=table_sampler(TABLE, tiny_tokenizer),
        labeller=RewardLabeller(number_reward),
        select=SELECTORS.get("all"),
        tokenizer=tiny_tokenizer,
        params=SamplingParams(n=3),
    )
    assert list(exp.columns()) == [SCORES] and exp.columns()[SCORES].tolist() == [[1.0, 3.0, -1.0]]


class SpyObjective(DPOObjective):
    """Online DPO that keeps the batch dict of every loss call."""

    def __init__(self):
        super().__init__(DPOParams())
        self.batches: list[dict] = []

    def loss(self, policy_logps, ref_logps, ctx):
        self.batches.append(ctx.batch)
        return super().loss(policy_logps, ref_logps, ctx)


class PreparingLabeller(RewardLabeller):
    def __init__(self, reward):
        super().__init__(reward)
        self.prepared: list[list[str]] = []

    def prepare(self, prompts):
        self.prepared.append(list(prompts))


def online_trainer(model, tokenizer, sampler, labeller, tmp_path, **args):
    import copy

    from datasets import Dataset

    return OnlineTrainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(tmp_path), report_to="none", remove_unused_columns=False, **args
        ),
        train_dataset=Dataset.from_dict({"prompt": list(TABLE)}),
        data_collator=PromptCollator(),
        processing_class=tokenizer,
        objective=SpyObjective(),
        reference_mode="copy",
        ref_model=copy.deepcopy(model),
        sampler=sampler,
        labeller=labeller,
        sampling_params=SamplingParams(n=3, logprobs=True),
        pack_length=64,
    )


def test_experience_columns_reach_the_objective(
    tiny_model, tiny_tokenizer, table_sampler, number_reward, tmp_path
):
    trainer = online_trainer(
        tiny_model,
        tiny_tokenizer,
        table_sampler(TABLE, tiny_tokenizer),
        RewardLabeller(number_reward),
        tmp_path,
    )
    trainer.current_gradient_accumulation_steps = 1  # what `train` sets before its first step
    trainer.training_step(tiny_model, {"prompts": list(TABLE)})
    (batch,) = trainer.objective.batches
    assert batch["sequences"].num_examples == 2
    assert batch[SCORES].tolist() == KEPT_SCORES
    assert batch[SCORES].device == trainer.args.device
    torch.testing.assert_close(batch[BEHAVIOUR_LOGPS], torch.tensor(KEPT_LOGPS, dtype=torch.float64))


def test_train_prepares_the_labeller_once_with_the_training_prompts(
    tiny_model, tiny_tokenizer, table_sampler, number_reward, tmp_path
):
    labeller = PreparingLabeller(number_reward)
    trainer = online_trainer(
        tiny_model,
        tiny_tokenizer,
        table_sampler(TABLE, tiny_tokenizer),
        labeller,
        tmp_path,
        max_steps=2,
        per_device_train_batch_size=3,
        save_strategy="no",
    )
    trainer.train()
    assert labeller.prepared == [list(TABLE)]
    assert len(trainer.objective.batches) == 2
