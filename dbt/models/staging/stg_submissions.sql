-- Current state of each submission. `late` and `missing` are Canvas's own flags (they know about
-- per-student due dates and late policies); the marts combine them with submitted_at vs due_at.
select
    id as submission_id,
    assignment_id,
    user_id,
    course_id,
    grader_id,
    workflow_state,
    coalesce(workflow_state = 'deleted', false) as is_deleted,
    score,
    grade,
    submission_type,
    attempt,
    late as canvas_late,
    missing as canvas_missing,
    submitted_at,
    graded_at
from {{ source('canvas', 'submissions') }}
