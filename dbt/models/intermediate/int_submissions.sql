-- Every live submission with its assignment's due date and points, its course, its percentage and
-- its timeliness as of this run:
--   late         submitted after the due date, or Canvas flagged it late (per-student dates, policies)
--   on_time      submitted by the due date, or submitted to a known assignment without a due date
--   graded_without_submission  graded with nothing submitted (e.g. work handed in on paper)
--   missing      not submitted and past due, or Canvas flagged it missing
--   pending      not submitted, not (yet) due
--   unknown      its assignment was never seen and Canvas gave no flag, so its due date is unknown
with submissions as (
    select * from {{ ref('stg_submissions') }} where not is_deleted
),

assignments as (
    select * from {{ ref('stg_assignments') }}
)

select
    s.submission_id,
    s.assignment_id,
    s.user_id,
    coalesce(s.course_id, a.course_id) as course_id,
    a.assignment_id is not null as assignment_known,
    a.due_at,
    s.submitted_at,
    s.workflow_state,
    s.score,
    a.points_possible,
    case
        when s.score is not null and a.points_possible > 0 then 100.0 * s.score / a.points_possible
    end as score_percent,
    case
        when s.submitted_at is not null and (s.submitted_at > a.due_at or coalesce(s.canvas_late, false))
            then 'late'
        when s.submitted_at is not null and a.assignment_id is not null then 'on_time'
        when s.submitted_at is null and s.workflow_state = 'graded' and not coalesce(s.canvas_missing, false)
            then 'graded_without_submission'
        when s.submitted_at is null and (a.due_at < current_timestamp or coalesce(s.canvas_missing, false))
            then 'missing'
        when a.assignment_id is not null then 'pending'
        else 'unknown'
    end as timeliness,
    current_timestamp as as_of
from submissions as s
left join assignments as a on a.assignment_id = s.assignment_id
where a.assignment_id is null or not a.is_deleted
