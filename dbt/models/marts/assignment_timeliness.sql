-- Submission timeliness per assignment (as of this run; see int_submissions for the rules).
-- enrolled_students: active student enrollments known for the assignment's course, to compare
-- with the submissions seen (Canvas sends no event for a student who never submits).
with submissions as (
    select * from {{ ref('int_submissions') }}
),

assignments as (
    select * from {{ ref('stg_assignments') }}
),

students as (
    select course_id, count(distinct user_id) as enrolled_students
    from {{ ref('stg_enrollments') }}
    where enrollment_type = 'StudentEnrollment' and workflow_state = 'active'
    group by 1
),

per_assignment as (
    select
        assignment_id,
        max(course_id) as course_id,
        bool_or(assignment_known) as assignment_known,
        count(*) as submissions,
        count(*) filter (where timeliness = 'on_time') as on_time,
        count(*) filter (where timeliness = 'late') as late,
        count(*) filter (where timeliness = 'missing') as missing,
        count(*) filter (where timeliness = 'graded_without_submission') as graded_without_submission,
        count(*) filter (where timeliness = 'pending') as pending,
        count(*) filter (where timeliness = 'unknown') as unknown,
        max(as_of) as as_of
    from submissions
    where assignment_id is not null
    group by 1
)

select
    p.assignment_id,
    p.course_id,
    a.title,
    a.due_at,
    p.assignment_known,
    p.submissions,
    p.on_time,
    p.late,
    p.missing,
    p.graded_without_submission,
    p.pending,
    p.unknown,
    round(p.on_time::numeric / nullif(p.on_time + p.late + p.missing, 0), 4) as on_time_rate,
    s.enrolled_students,
    p.as_of
from per_assignment as p
left join assignments as a on a.assignment_id = p.assignment_id
left join students as s on s.course_id = p.course_id
