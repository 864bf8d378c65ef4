"""The planner's public names (the code lives in `memfit.planning`)."""

from memfit.planning import Candidate, Plan, PlanSettings, plan

__all__ = ["Candidate", "Plan", "PlanSettings", "plan"]
